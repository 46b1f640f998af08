"""annex: the prefectural annex file (都道府県知事保存附票本人確認情報ファイル). No 個人番号 anywhere."""
