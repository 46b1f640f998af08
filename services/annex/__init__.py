"""annex: the prefectural annex file (都道府県知事保存附票本人確認情報ファイル); by law (Art. 17, 30-41) it
carries no My Number at all, and a test keeps this package free of any such field or code path."""
