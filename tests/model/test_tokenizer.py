from unimp_core.model.tokenizer import dataset_texts, load_tokenizer, save_tokenizer, train_bpe_tokenizer


def test_dataset_texts_cover_items_and_interactions(dataset):
    texts = list(dataset_texts(dataset))
    assert "Brand1" in texts and "Sneakers" in texts  # brand, category
    assert any("model 3" in t for t in texts)  # title
    assert "great product" in texts and "fits well and looks good" in texts  # summary, explanation
    assert None not in texts and "" not in texts


def test_trained_bpe_learns_the_dataset_words(dataset):
    tok = train_bpe_tokenizer(dataset_texts(dataset), vocab_size=600)
    assert 256 < len(tok) <= 600
    assert len(tok(" comfortable", add_special_tokens=False)["input_ids"]) == 1  # a frequent word: merged
    # byte-level: text never seen still encodes and decodes exactly
    text = "Ünïcode ☃ never seen 123"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token is None


def test_save_load_round_trip(tiny_bundle, tmp_path):
    tok = tiny_bundle.tokenizer
    path = save_tokenizer(tok, tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer" and path.is_dir()
    again = load_tokenizer(path)
    text = "<image> red hats model 3 <answer> item_12 <|endofchunk|> rate_5 s_2"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert len(again) == len(tok) and again.pad_token_id == tok.pad_token_id
    save_tokenizer(tok, tmp_path / "run")  # replacing an existing one works and leaves no staging folder
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tokenizer"]
