"""identity: the prefectural identity file (都道府県知事保存本人確認情報ファイル)."""
