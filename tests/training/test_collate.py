import pickle

import pytest
import torch

from unimp_core.errors import UnimpError
from unimp_core.tasks import Sample, build_eval_samples, build_training_samples, context
from unimp_core.training.collate import IGNORE_INDEX, answer_labels, make_collator, special_ids
from tests.tasks.synthetic import make_dataset, words as prompt_words

SPECIAL = ["<|endofchunk|>", "<image>", "<answer>"]


def word_tokenizer(texts, specials=SPECIAL):
    """One token per whitespace-separated word: token positions are the word positions."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<pad>": 1, "<s>": 2, "</s>": 3}
    for text in texts:
        for w in text.split():
            if w not in specials:
                vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": list(specials)})
    return fast


def fake_image(item_id: int) -> torch.Tensor:
    """(C, H, W) pixels whose value names the item (module level: the collator must pickle)."""
    return torch.full((3, 4, 4), float(item_id + 1))


def reference_labels(words):
    """Per-word labels by the definition, written as the plain loop the collator avoids: answer spans,
    their closing token only in the row's last span."""
    out, inside = [], False
    for i, w in enumerate(words):
        if w == "<answer>":
            inside = True
            out.append(False)
        elif inside:
            closing = w in ("<|endofchunk|>", "</s>")
            out.append(w != "<image>" and not (closing and "<answer>" in words[i + 1:]))
            if closing:
                inside = False
        else:
            out.append(False)
    return out


def test_labels_hand_example():
    text = "a <answer> x y <|endofchunk|> b <image> c <answer> z <|endofchunk|>"
    tok = word_tokenizer([text])
    batch = make_collator(tok, add_bos=False)([Sample("rec", text, [7])])
    words = text.split()
    labelled = [words[i] for i in range(len(words)) if batch["labels"][0, i] != IGNORE_INDEX]
    assert labelled == ["x", "y", "z", "<|endofchunk|>"]  # the first span's close: not the row's last span
    ids = batch["input_ids"][0]
    assert torch.equal(batch["labels"][0][batch["labels"][0] != IGNORE_INDEX],
                       ids[[2, 3, 9, 10]])


def test_labels_match_reference_on_task_samples():
    ds = make_dataset("leave-one-out")
    samples = build_training_samples(ds, ["rec", "search", "exp", "img_sel"], history_len=3, seed=0)[:24]
    samples += [s.with_answer() for s in build_eval_samples(ds, "exp", "test")[:4]]
    tok = word_tokenizer([s.text for s in samples])
    batch = make_collator(tok, max_length=4096)(samples)
    n_recon = 0
    for b, s in enumerate(samples):
        words = ["<s>"] + prompt_words(s.text)
        expected = torch.tensor(reference_labels(words))
        got = batch["labels"][b, : len(words)] != IGNORE_INDEX
        assert torch.equal(got, expected), s.text
        assert (batch["labels"][b, len(words):] == IGNORE_INDEX).all()
        n_recon += s.text.count("<answer>") - 1
    assert n_recon > 0  # history reconstruction spans were exercised


def test_padding_sides_and_shapes():
    samples = [Sample("rec", "p <image> q <answer> r <|endofchunk|>", [3]),
               Sample("exp", "<answer> s t u v w <|endofchunk|>", [])]
    tok = word_tokenizer([s.text for s in samples])
    right = make_collator(tok, images=fake_image, image_shape=(3, 4, 4))(samples)
    left = make_collator(tok, padding_side="left", images=fake_image, image_shape=(3, 4, 4))(samples)
    assert right["input_ids"].shape == (2, 8) and right["attention_mask"][0].tolist() == [1] * 7 + [0]
    assert left["attention_mask"][0].tolist() == [0] + [1] * 7
    assert left["input_ids"][0, 0] == tok.pad_token_id and left["input_ids"][0, 1] == tok.bos_token_id
    # the same tokens and labels, shifted
    assert torch.equal(right["input_ids"][0, :7], left["input_ids"][0, 1:])
    assert torch.equal(right["labels"][0, :7], left["labels"][0, 1:])
    assert right["weights"].tolist() == [2.0, 1.0] and right["task_ids"].tolist() == [0, 2]
    assert right["vision_x"].shape == (2, 1, 1, 3, 4, 4)
    assert right["image_ids"].tolist() == [[3], [-1]] and right["media_mask"].tolist() == [[True], [False]]
    assert (right["vision_x"][0, 0] == 4).all() and (right["vision_x"][1] == 0).all()


def test_truncation_keeps_the_end_and_drops_cut_images():
    text = ("<image> a <answer> item_1 <|endofchunk|> <image> b <answer> item_2 <|endofchunk|> "
            "<image> c q <answer> item_3 <|endofchunk|>")
    sample = Sample("rec", text, [10, 11, 12])
    other = Sample("search", "<image> z <answer> w <|endofchunk|>", [20])
    tok = word_tokenizer([text, other.text])
    words = text.split()
    for max_length in range(2, len(words) + 3):
        batch = make_collator(tok, max_length=max_length, images=fake_image, image_shape=(3, 4, 4))([sample, other])
        kept = words[-(max_length - 1):]  # one slot goes to <s>
        row = batch["input_ids"][0][batch["attention_mask"][0].bool()]
        assert row[0] == tok.bos_token_id
        assert tok.convert_ids_to_tokens(row[1:].tolist()) == kept
        n_img = kept.count("<image>")
        expected_ids = [10, 11, 12][3 - n_img:]
        assert batch["image_ids"][0][batch["media_mask"][0]].tolist() == expected_ids
        assert (row == tok.convert_tokens_to_ids("<image>")).sum() == n_img
        # images sit first in the row, in order; the rest are zero padding
        for t, item in enumerate(expected_ids):
            assert (batch["vision_x"][0, t, 0] == item + 1).all()
        assert (batch["vision_x"][0, n_img:] == 0).all()
        # the label span of a cut-open answer is not labelled
        row_labels = batch["labels"][0, 1:len(kept) + 1].tolist()
        labelled = [kept[i] for i, lab in enumerate(row_labels) if lab != IGNORE_INDEX]
        assert labelled == [w for w, keep in zip(kept, reference_labels(kept)) if keep]


def test_batch_without_images_gets_one_zero_slot():
    samples = [Sample("rec", "a <answer> b <|endofchunk|>", []), Sample("rec", "c <answer> d <|endofchunk|>", [])]
    tok = word_tokenizer([s.text for s in samples])
    batch = make_collator(tok, images=fake_image, image_shape=(3, 4, 4))(samples)
    assert batch["vision_x"].shape == (2, 1, 1, 3, 4, 4) and not batch["vision_x"].any()
    assert not batch["media_mask"].any()
    with pytest.raises(UnimpError, match="image_shape"):
        make_collator(tok, images=fake_image)(samples)


def test_precomputed_features_instead_of_pixels():
    samples = [Sample("rec", "<image> a <image> <answer> b <|endofchunk|>", [1, 2]),
               Sample("exp", "<image> c <answer> d <|endofchunk|>", [5])]
    tok = word_tokenizer([s.text for s in samples])
    feats = make_collator(tok, images=lambda i: torch.full((6, 8), float(i)), image_shape=(6, 8))(samples)
    assert feats["vision_x"].shape == (2, 2, 1, 6, 8)  # (B, T_img, F, v, d)
    assert (feats["vision_x"][1, 0] == 5).all() and (feats["vision_x"][1, 1] == 0).all()


def test_padding_images_are_never_attended():
    """Flamingo's masked cross-attention ignores whatever sits in the padding image slots.

    open_flamingo builds its gated cross-attention with only_attend_immediate_media=True (tested
    here); its other mode lets text before the first image attend to every slot, real ones included.
    """
    from open_flamingo.src.helpers import MaskedCrossAttention

    samples = [Sample("rec", "<image> a <image> b <answer> c <|endofchunk|>", [1, 2]),
               Sample("rec", "x y <image> z <answer> w <|endofchunk|>", [3]),
               Sample("rec", "no pictures <answer> v <|endofchunk|>", [])]
    tok = word_tokenizer([s.text for s in samples])
    batch = make_collator(tok)(samples)
    torch.manual_seed(0)
    for _ in range(3):
        xattn = MaskedCrossAttention(dim=8, dim_visual=8, dim_head=4, heads=2)
        B, T = batch["input_ids"].shape
        x = torch.randn(B, T, 8)
        media = torch.randn(B, batch["image_ids"].shape[1], 3, 8)  # (B, T_img, latents, d)
        locations = batch["input_ids"] == tok.convert_tokens_to_ids("<image>")
        noisy = media.clone()
        noisy[~batch["media_mask"]] = 1e4 * torch.randn_like(noisy[~batch["media_mask"]])
        a = xattn(x, media * batch["media_mask"][..., None, None], media_locations=locations)
        b = xattn(x, noisy, media_locations=locations)
        assert torch.allclose(a, b, atol=1e-6)


def test_image_count_mismatch_and_missing_tokens_raise():
    tok = word_tokenizer(["a"])
    with pytest.raises(UnimpError, match="1 <image> tokens for 2 images"):
        make_collator(tok)([Sample("rec", "<image> a <answer> b", [1, 2])])
    with pytest.raises(UnimpError, match="unknown task"):
        make_collator(tok)([Sample("img_foo", "a <answer> b", [])])
    with pytest.raises(UnimpError, match="<answer> is missing"):
        special_ids(word_tokenizer(["a"], specials=["<|endofchunk|>", "<image>"]))


def test_collator_pickles_for_worker_processes():
    samples = [Sample("rec", "<image> a <answer> b <|endofchunk|>", [1])]
    tok = word_tokenizer([s.text for s in samples])
    collate = pickle.loads(pickle.dumps(make_collator(tok, images=fake_image, image_shape=(3, 4, 4))))
    assert collate(samples)["vision_x"].shape == (1, 1, 1, 3, 4, 4)


def test_answer_labels_eos_closes_a_span_and_pad_equal_to_eos_is_masked():
    from unimp_core.training.collate import SpecialIds

    ids = SpecialIds(image=5, eoc=6, answer=7, pad=0, bos=1, eos=2, item_range=None, item_starts=None)
    x = torch.tensor([[1, 7, 9, 2, 9, 0, 0]])
    m = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    assert answer_labels(x, m, ids).tolist() == [[-100, -100, 9, 2, -100, -100, -100]]
    same = SpecialIds(image=5, eoc=6, answer=7, pad=2, bos=1, eos=2, item_range=None, item_starts=None)
    x = torch.tensor([[1, 7, 9, 2, 2]])
    m = torch.tensor([[1, 1, 1, 1, 0]])
    # eos == pad: eos does not close (it cannot be told from padding), padding is never a label
    assert answer_labels(x, m, same).tolist() == [[-100, -100, 9, 2, -100]]


def test_with_bpe_tokenizer_of_the_model_package():
    """The real tiny tokenizer (byte-level BPE + UniMP's tokens): labels decode to the answers."""
    from unimp_core.model import tokenizer as tokenizer_mod
    from unimp_core.model import vocab
    ds = make_dataset("leave-one-out")
    tok = tokenizer_mod.train_bpe_tokenizer(tokenizer_mod.dataset_texts(ds), vocab_size=400)
    vocab.add_flamingo_tokens(tok)
    vocab.add_unimp_tokens(tok, n_items=ds.items.height)
    ctx = context(ds)
    samples = build_training_samples(ctx, ["rec", "img_sel"], history_len=3, seed=0)[:8]
    batch = make_collator(tok, max_length=4096)(samples)
    for b, s in enumerate(samples):
        lab = batch["labels"][b]
        assert (batch["input_ids"][b] == tok.convert_tokens_to_ids("<image>")).sum() == len(s.image_items)
        # decode token by token: UniMP's tokens swallow the space before them
        labelled = [tok.decode([t]).strip() for t in lab[lab != IGNORE_INDEX].tolist()]
        spans = [chunk.split("<|endofchunk|>")[0].split() for chunk in s.text.split("<answer>")[1:]]
        expected = [w for span in spans for w in span] + ["<|endofchunk|>"]  # the close of the last span only
        assert [w for w in labelled if w] == expected


def test_training_stream_through_a_dataloader_with_curriculum():
    from torch.utils.data import DataLoader

    from unimp_core.training.samples import SampleDataset, TrainingSamples

    ds = make_dataset("leave-one-out")
    stream = TrainingSamples(ds, ["rec", "search", "img_sel", "exp"], history_len=3, seed=0, curriculum=True,
                             n_epochs=4)
    assert {s.task for s in stream.samples} == {"rec"}
    stream.set_epoch(3)
    assert {s.task for s in stream.samples} == {"rec", "search", "img_sel", "exp"}
    n_exp = sum(s.task == "exp" for s in stream.samples)
    n_rec = sum(s.task == "rec" for s in stream.samples)
    assert n_rec == round(0.25 * len(context(ds).train_lengths)) and n_exp > n_rec  # replayed vs newest
    tok = word_tokenizer([s.text for s in stream.samples])
    loader = DataLoader(stream, batch_size=4, collate_fn=make_collator(tok, images=fake_image, image_shape=(3, 4, 4)))
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(stream)
    for b in batches:
        assert b["vision_x"].shape[:3] == (b["input_ids"].shape[0], b["image_ids"].shape[1], 1)
        assert (b["labels"] != IGNORE_INDEX).any(dim=1).all()  # every sample trains on something
    evals = SampleDataset(build_eval_samples(ds, "rec", "test"))
    batch = next(iter(DataLoader(evals, batch_size=3, collate_fn=make_collator(tok, padding_side="left",
                                                                              keep_samples=True))))
    assert (batch["input_ids"][:, -1] == tok.convert_tokens_to_ids("<answer>")).all()
    assert [s.answer for s in batch["samples"]] == [s.answer for s in evals.samples[:3]]


def test_a_span_naming_items_labels_the_items_and_its_end_not_their_content():
    from unimp_core.training.collate import SpecialIds

    # items are ids 20..29; rec's sequence layout: <answer> item text text item item <eoc>
    ids = SpecialIds(image=5, eoc=6, answer=7, pad=0, bos=1, eos=2, item_range=(20, 30), item_starts=None)
    x = torch.tensor([[1, 9, 7, 21, 5, 11, 12, 22, 23, 6, 7, 13, 14, 6]])
    m = torch.ones_like(x)
    keep = [-100, -100, -100, 21, -100, -100, -100, 22, 23, -100, -100, 13, 14, 6]
    # the item span's <eoc> is not the row's last span's; a text answer (13 14) keeps every token
    assert answer_labels(x, m, ids).tolist() == [keep]


def test_a_span_naming_several_items_teaches_from_its_second_item_on():
    from unimp_core.training.collate import SpecialIds

    # atomic ids 20..29: rec's sequence layout `<answer> 21 text 22 23`, then a one-item answer span (chunks)
    ids = SpecialIds(image=5, eoc=6, answer=7, pad=0, bos=1, eos=2, item_range=(20, 30), item_starts=(20, 30))
    x = torch.tensor([[1, 7, 21, 11, 22, 23, 6, 7, 24, 6]])
    keep = [-100, -100, -100, -100, 22, 23, -100, -100, 24, 6]
    assert answer_labels(x, torch.ones_like(x), ids).tolist() == [keep]
    # semantic ids: codes 20..39, an item begins with a first-level code (20..29); the first item is two tokens
    ids = SpecialIds(image=5, eoc=6, answer=7, pad=0, bos=1, eos=2, item_range=(20, 40), item_starts=(20, 30))
    x = torch.tensor([[1, 7, 21, 35, 22, 36, 7, 23, 37]])
    keep = [-100, -100, -100, -100, 22, 36, -100, 23, 37]
    assert answer_labels(x, torch.ones_like(x), ids).tolist() == [keep]


def test_rec_sequence_training_labels_every_item_but_the_first():
    from unimp_core.model.vocab import add_unimp_tokens, special_ids as vocab_special_ids

    ds = make_dataset("leave-one-out")
    ctx = context(ds).with_prompts("sequence", describe_items=False)
    samples = build_training_samples(ctx, ["rec"], history_len=4, seed=0)[:8]
    tok = word_tokenizer([])  # the item tokens are added ones, as a model's
    add_unimp_tokens(tok, ds.items.height, 0)
    ids = vocab_special_ids(tok)
    assert ids.item_starts == ids.item_range is not None
    batch = make_collator(tok, max_length=4096)(samples)
    for b, s in enumerate(samples):
        items = [w for w in s.text.split() if w.startswith("item_")]
        labelled = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX]
        assert len(items) >= 2 and len(labelled) == len(items) - 1
