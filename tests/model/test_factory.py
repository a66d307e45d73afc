"""The tiny model end to end: offline build, freezing, images, generation, speed, run-folder rebuild."""


import json

import pytest
import torch
from PIL import Image

from unimp_core.errors import UnimpError
from unimp_core.model.openflamingo.factory import build_model, freeze, load_bundle, save_bundle
from unimp_core.model.setup import trainable_state
from unimp_core.model.openflamingo.spec import ModelSpec

from .conftest import N_ITEMS, make_dataset, open_gates

HISTORY = "<image> Category Hats Brand Brand1 Title red hats model 3 <answer> item_3 <|endofchunk|>"


def _batch(tok, texts, side="right"):
    tok.padding_side = side
    return tok(texts, return_tensors="pt", padding=True)


def _images(b, t, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 1, 3, size, size, generator=g)  # (B, T_img, F, C, H, W)


def test_tiny_builds_offline(tiny_bundle):
    b = tiny_bundle
    assert type(b.model).__name__ == "Flamingo"
    assert b.image_size == 32 and b.total < 2_000_000
    x = b.image_transform(Image.new("RGB", (64, 48), (200, 10, 10)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert len(b.model.perceiver.layers) == 1 and b.model.perceiver.latents.shape == (8, 64)


def test_tiny_trains_its_random_lm_by_default(tiny_bundle):
    lm = tiny_bundle.model.lang_encoder
    assert tiny_bundle.spec.train_lm is True
    assert all(p.requires_grad for p in lm.parameters())
    assert not any(p.requires_grad for p in tiny_bundle.model.vision_encoder.parameters())


def test_tiny_item_tokens_start_as_distinct_random_rows(tiny_bundle):
    # A random LM's token mean is a near-zero vector: every item would start as the same one.
    lm = tiny_bundle.model.lang_encoder
    std = lm.config.initializer_range
    for weight in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight):
        rows = weight[tiny_bundle.ids.items].detach()  # (N, d)
        assert torch.cdist(rows, rows).add(torch.eye(len(rows))).min() > 0.1 * std
        assert 0.7 * std < rows.std().item() < 1.3 * std


def test_freezing_as_openflamingo(dataset):
    bundle = build_model(ModelSpec(train_lm=False), items_text=dataset, n_items=N_ITEMS)
    tiny_bundle = bundle
    model = bundle.model
    lm = model.lang_encoder
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    assert all(p.requires_grad for p in model.perceiver.parameters())
    assert all(p.requires_grad for p in lm.gated_cross_attn_layers.parameters())
    assert lm.get_input_embeddings().weight.requires_grad and lm.get_output_embeddings().weight.requires_grad
    assert not any(p.requires_grad for p in lm.old_decoder_blocks.parameters())
    expected = sum(p.numel() for m in (model.perceiver, lm.gated_cross_attn_layers, lm.get_input_embeddings(),
                                       lm.get_output_embeddings()) for p in m.parameters())
    assert tiny_bundle.trainable == expected > 0
    assert tiny_bundle.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(trainable_state(model)) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_train_lm_unfreezes_the_lm_only(tiny_bundle, fresh_model):
    frozen = freeze(fresh_model, train_lm=False)
    count = freeze(fresh_model, train_lm=True)
    lm = fresh_model.lang_encoder
    assert all(p.requires_grad for p in lm.parameters())
    assert not any(p.requires_grad for p in fresh_model.vision_encoder.parameters())
    assert count == tiny_bundle.trainable == frozen + sum(p.numel() for p in lm.old_decoder_blocks.parameters()) + sum(
        p.numel() for n, p in lm.named_parameters() if "final_layer_norm" in n)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_logits_at_label_positions_match_the_full_logits(arch):
    """`logits_at` runs the head where the loss reads only: same logits, same loss, same gradients."""
    from unimp_core.training.loss import answer_loss_parts, label_positions

    ds = make_dataset(12)
    bundle = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 1}), items_text=ds, n_items=12)
    model, tok = bundle.model, bundle.tokenizer
    texts = ["<answer> item_3 <|endofchunk|> <answer> item_5 <|endofchunk|> next? <answer> item_7 <|endofchunk|>",
             "Title red hats <answer> item_1 <|endofchunk|> next? <answer> item_2 <|endofchunk|>"]
    enc = _batch(tok, texts)
    answer = tok.convert_tokens_to_ids("<answer>")
    labels = enc.input_ids.clone()
    labels[(enc.attention_mask == 0) | (labels == answer)] = -100
    labels[:, :2] = -100
    vision = torch.zeros(2, 1, 1, 3, bundle.image_size, bundle.image_size)
    at = label_positions(labels)
    full = model(vision_x=vision, lang_x=enc.input_ids, attention_mask=enc.attention_mask).logits  # (B, T, V)
    picked = model(vision_x=vision, lang_x=enc.input_ids, attention_mask=enc.attention_mask, logits_at=at).logits
    assert picked.shape == (int(at.sum()), full.shape[-1])
    torch.testing.assert_close(picked, full[at])
    grads = []
    for logits in (full, picked):
        model.zero_grad()
        answer_loss_parts(logits, labels, gamma=2.0).loss.backward(retain_graph=True)
        grads.append(model.lang_encoder.get_input_embeddings().weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert not model.lang_encoder.is_conditioned()


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_packed_training_batches_give_the_padded_batches_logits(arch):
    """A model without cross-attention packs a training batch (`model.packing`): each sample's rows side by
    side, positions restarting, attention kept within a sample; the loss reads the same logits."""
    from unimp_core.model.openflamingo import family as openflamingo
    from unimp_core.model.packing import pack_right_padded
    from unimp_core.model.vocab import item_token_range
    from unimp_core.training.loss import answer_loss_parts, item_rows, label_positions

    ds = make_dataset(12)
    bundle = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 2}, cross_attn_every_n_layers=0),
                         items_text=ds, n_items=12)
    model, tok = bundle.model, bundle.tokenizer
    model.eval()  # no dropout: the two layouts draw different masks
    texts = ["next? <answer> item_3 item_5 item_7 item_8 item_9 item_10 item_11 <|endofchunk|>",
             "<answer> item_1 <|endofchunk|>", "<answer> item_2 item_4 <|endofchunk|>", "<answer> item_6 <|endofchunk|>"]
    enc = _batch(tok, texts)
    labels = enc.input_ids.clone()
    labels[(enc.attention_mask == 0)] = -100
    labels[:, :2] = -100
    batch = {"vision_x": torch.zeros(4, 1, 1, 3, bundle.image_size, bundle.image_size), "input_ids": enc.input_ids,
             "attention_mask": enc.attention_mask, "labels": labels}
    assert openflamingo.packs(model)
    assert pack_right_padded(enc.input_ids, enc.attention_mask, pad=0).input_ids.shape[0] == 2  # 4 samples in 2 rows
    packed = openflamingo.forward(model, batch)
    padded = model(vision_x=batch["vision_x"], lang_x=enc.input_ids, attention_mask=enc.attention_mask,
                   logits_at=label_positions(labels)).logits
    torch.testing.assert_close(packed, padded)
    # Item labels scored against the items alone: their rows never computed over the rest of the vocabulary,
    # the same loss as masking the other columns out of the full rows.
    item_range = item_token_range(tok)
    split = openflamingo.forward(model, batch, item_range)
    rows = item_rows(labels[:, 1:][labels[:, 1:] != -100], item_range)
    assert 0 < int(rows.sum()) < len(rows)  # items and the closing tokens
    torch.testing.assert_close(split.items, padded[rows, item_range[0]:item_range[1]])
    torch.testing.assert_close(split.others, padded[~rows])
    torch.testing.assert_close(answer_loss_parts(split, labels, item_range=item_range).loss,
                               answer_loss_parts(padded, labels, item_range=item_range).loss)
    reading = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 2}), items_text=ds, n_items=12).model
    assert not openflamingo.packs(reading)  # cross-attention: a packed row would see another sample's image


def test_gates_closed_means_images_do_nothing_open_means_they_matter(tiny_bundle, fresh_model):
    tok, size = tiny_bundle.tokenizer, tiny_bundle.image_size
    enc = _batch(tok, [HISTORY * 2 + " What next? <answer>"] * 2)
    fresh_model.eval()

    def logits(seed):
        with torch.no_grad():
            return fresh_model(vision_x=_images(2, 2, size, seed), lang_x=enc.input_ids,
                               attention_mask=enc.attention_mask).logits

    torch.testing.assert_close(logits(1), logits(2))  # gates start at 0
    open_gates(fresh_model)
    a, b = logits(1), logits(2)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(a, logits(1))


def test_samples_without_images_run(tiny_bundle, fresh_model):
    tok, size = tiny_bundle.tokenizer, tiny_bundle.image_size
    open_gates(fresh_model)
    fresh_model.eval()
    mixed = _batch(tok, [HISTORY + " What next? <answer>", "Category Hats Title no picture What next? <answer>"])
    with torch.no_grad():
        one = fresh_model(vision_x=_images(2, 1, size, 1), lang_x=mixed.input_ids, attention_mask=mixed.attention_mask)
        two = fresh_model(vision_x=_images(2, 1, size, 2), lang_x=mixed.input_ids, attention_mask=mixed.attention_mask)
        # the sample without <image> does not see the placeholder image, whatever it holds
        torch.testing.assert_close(one.logits[1], two.logits[1])
        # a batch in which nobody has an image: vision_x with zero images per sample
        alone = _batch(tok, ["Category Hats Title no picture What next? <answer>"])
        out = fresh_model(vision_x=torch.zeros(1, 0, 1, 3, size, size), lang_x=alone.input_ids,
                          attention_mask=alone.attention_mask)
    assert torch.isfinite(out.logits).all()
    n = alone.input_ids.shape[1]
    torch.testing.assert_close(out.logits[0], one.logits[1, :n])


def test_lm_runs_without_attention_mask(tiny_bundle, fresh_model):
    # transformers >= 5.18 generate() drops an all-ones mask; the Flamingo LM must accept its absence
    tok, size = tiny_bundle.tokenizer, tiny_bundle.image_size
    open_gates(fresh_model)
    fresh_model.eval()
    enc = _batch(tok, [HISTORY + " What next? <answer>"])
    with torch.no_grad():
        with_mask = fresh_model(vision_x=_images(1, 1, size, 3), lang_x=enc.input_ids,
                                attention_mask=enc.attention_mask).logits
        fresh_model._encode_vision_x(_images(1, 1, size, 3))
        fresh_model._condition_media_locations(enc.input_ids)
        without = fresh_model.lang_encoder(input_ids=enc.input_ids).logits
        fresh_model.lang_encoder.clear_conditioned_layers()
    torch.testing.assert_close(with_mask, without)


def test_beam_generation(tiny_bundle, fresh_model):
    tok, size = tiny_bundle.tokenizer, tiny_bundle.image_size
    open_gates(fresh_model)
    fresh_model.eval()
    enc = _batch(tok, [HISTORY + " What next? <answer>", HISTORY * 2 + " What next? <answer>"], side="left")
    vision = _images(2, 2, size, 4)
    with torch.no_grad():
        beams = fresh_model.generate(vision_x=vision, lang_x=enc.input_ids, attention_mask=enc.attention_mask,
                                     num_beams=3, max_new_tokens=4, num_return_sequences=3)
        greedy = fresh_model.generate(vision_x=vision, lang_x=enc.input_ids, attention_mask=enc.attention_mask,
                                      max_new_tokens=4)
        no_mask = fresh_model.generate(vision_x=vision[:1], lang_x=enc.input_ids[:1, -20:], num_beams=3,
                                       max_new_tokens=3)
    n = enc.input_ids.shape[1]
    assert beams.shape[0] == 6 and n < beams.shape[1] <= n + 4
    assert torch.equal(beams[::3, :n], enc.input_ids)
    assert greedy.shape[0] == 2 and no_mask.shape[0] == 1
    assert not fresh_model.lang_encoder._use_cached_vision_x  # generate cleaned up after itself


def test_training_step_on_a_batch_of_histories(tiny_bundle, fresh_model):
    """A forward+backward step on 4 histories of 5 images (~150 tokens) moves only trainable weights
    (its speed is measured by benchmarks/bench_train.py, not here)."""
    tok, ids, size = tiny_bundle.tokenizer, tiny_bundle.ids, tiny_bundle.image_size
    text = " ".join([HISTORY] * 5) + " What is the next item recommended to the user? <answer> item_9 <|endofchunk|>"
    enc = _batch(tok, [text] * 4)
    assert 100 <= enc.input_ids.shape[1] <= 250
    vision = _images(4, 5, size, 5)
    fresh_model.train()
    params = [p for p in fresh_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    frozen_before = [p.detach().clone() for p in fresh_model.vision_encoder.parameters()]
    perceiver_before = fresh_model.perceiver.latents.detach().clone()
    for _ in range(2):
        out = fresh_model(vision_x=vision, lang_x=enc.input_ids, attention_mask=enc.attention_mask)
        logits = out.logits[:, :-1]  # (B, T-1, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), enc.input_ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(fresh_model.perceiver.latents, perceiver_before)
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, fresh_model.vision_encoder.parameters()))
    assert fresh_model.perceiver.latents.grad is None  # zero_grad ran; vision tower never got a grad
    assert all(p.grad is None for p in fresh_model.vision_encoder.parameters())
    item_logits = out.logits[..., ids.items]  # (B, T, N): item scores in item-id order
    assert item_logits.shape == (4, enc.input_ids.shape[1], N_ITEMS)


def test_build_is_deterministic_and_rebuilds_from_the_run_folder(tiny_bundle, dataset, tmp_path):
    save_bundle(tiny_bundle, tmp_path)
    assert (tmp_path / "model.json").is_file() and (tmp_path / "tokenizer").is_dir()
    assert json.loads((tmp_path / "model.json").read_text())["family"] == "openflamingo"
    again = load_bundle(tmp_path)
    assert len(again.tokenizer) == len(tiny_bundle.tokenizer)
    assert torch.equal(again.ids.items, tiny_bundle.ids.items) and again.trainable == tiny_bundle.trainable
    ref = tiny_bundle.model.state_dict()
    got = again.model.state_dict()
    assert ref.keys() == got.keys()
    for name in ref:  # frozen random weights (and the seeded trainable init) come back identical
        assert torch.equal(ref[name], got[name]), name


def test_llama_tiny_and_dataset_checks():
    ds = make_dataset(12)
    bundle = build_model(ModelSpec(tiny={"lm_arch": "llama", "layers": 1}), items_text=ds, n_items=12)
    assert type(bundle.model.lang_encoder).__name__ == "LlamaForCausalLM"
    assert bundle.ids.n_items == 12
    with pytest.raises(UnimpError, match="n_items is 13"):
        build_model(ModelSpec(), items_text=ds, n_items=13)
    with pytest.raises(UnimpError, match="trains its tokenizer"):
        build_model(ModelSpec(), n_items=12)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_feed_forward_width_is_four_times_hidden_unless_set(arch, tmp_path):
    """tiny.ffn_size sets each decoder layer's feed-forward width (SASRec's: the hidden size), and a rebuilt run keeps it."""
    def widths(model) -> set[int]:
        return {m.out_features for n, m in model.lang_encoder.named_modules()
                if isinstance(m, torch.nn.Linear) and n.endswith(("dense_h_to_4h", "up_proj"))}

    ds = make_dataset(12)
    wide = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 1, "hidden_size": 32}), items_text=ds, n_items=12)
    narrow = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 1, "hidden_size": 32, "ffn_size": 32}),
                         items_text=ds, n_items=12)
    assert widths(wide.model) == {128} and widths(narrow.model) == {32}
    save_bundle(narrow, tmp_path)
    assert widths(load_bundle(tmp_path).model) == {32}


@pytest.mark.parametrize("arch, own", [("gpt_neox", "GELUActivation"), ("llama", "SiLUActivation")])
def test_activation_is_the_architectures_own_unless_set(arch, own, tmp_path):
    """tiny.activation sets the feed-forward's activation (SASRec's: ReLU), and a rebuilt run keeps it."""
    def activations(model) -> set[str]:
        return {type(m.act_fn if hasattr(m, "act_fn") else m.act).__name__ for m in model.lang_encoder.modules()
                if type(m).__name__ in ("GPTNeoXMLP", "LlamaMLP")}

    ds = make_dataset(12)
    tiny = {"lm_arch": arch, "layers": 1, "hidden_size": 16, "heads": 2}
    assert activations(build_model(ModelSpec(tiny=tiny), items_text=ds, n_items=12).model) == {own}
    relu = build_model(ModelSpec(tiny={**tiny, "activation": "relu"}), items_text=ds, n_items=12)
    assert activations(relu.model) == {"ReLU"}
    save_bundle(relu, tmp_path)
    assert activations(load_bundle(tmp_path).model) == {"ReLU"}


@pytest.mark.parametrize("tie", [True, False])
def test_scale_embeddings_multiplies_the_input_rows_only(tie, tmp_path):
    """tiny.scale_embeddings: the LM reads each token's row times sqrt(hidden); the answer scores are the rows as
    they are (tied or not), and a rebuilt run keeps the scale."""
    ds = make_dataset(12)
    tiny = {"layers": 1, "hidden_size": 16, "heads": 2, "tie_embeddings": tie}
    plain = build_model(ModelSpec(tiny=tiny), items_text=ds, n_items=12)
    scaled = build_model(ModelSpec(tiny={**tiny, "scale_embeddings": True}), items_text=ds, n_items=12)
    ids = scaled.ids.items[[3, 5]][None]
    for bundle, factor in ((plain, 1.0), (scaled, 4.0)):
        lm = bundle.model.lang_encoder
        weight = lm.get_input_embeddings().weight
        assert torch.equal(lm.get_input_embeddings()(ids), weight[ids] * factor)
    assert torch.equal(scaled.model.lang_encoder.get_output_embeddings().weight,
                       plain.model.lang_encoder.get_output_embeddings().weight)  # same init (init_seed), unscaled
    save_bundle(scaled, tmp_path)
    lm = load_bundle(tmp_path).model.lang_encoder
    assert torch.equal(lm.get_input_embeddings()(ids), lm.get_input_embeddings().weight[ids] * 4.0)


def test_load_bundle_needs_a_run_folder(tmp_path):
    with pytest.raises(UnimpError, match="not a run folder"):
        load_bundle(tmp_path)


def test_checkpoint_errors_are_one_line(tmp_path):
    from unimp_core.model.openflamingo.factory import _load_checkpoint
    from unimp_core.progress import Progress

    with pytest.raises(UnimpError, match="not a checkpoint file"):
        _load_checkpoint(torch.nn.Linear(2, 2), str(tmp_path / "missing.pt"), Progress())
    path = tmp_path / "other.pt"
    torch.save({"something.else": torch.zeros(2)}, path)
    with pytest.raises(UnimpError, match="none of its 1 tensors"):
        _load_checkpoint(torch.nn.Linear(2, 2), str(path), Progress())


def test_checkpoint_is_loaded_non_strictly(tiny_bundle, fresh_model, tmp_path):
    from unimp_core.model.openflamingo.factory import _load_checkpoint
    from unimp_core.progress import Progress

    # what OpenFlamingo saves: Perceiver and cross-attention (here without the embeddings), plus a stray tensor
    state = {f"perceiver.{k}": torch.full_like(v, 0.5) for k, v in fresh_model.perceiver.state_dict().items()}
    xattn = fresh_model.lang_encoder.gated_cross_attn_layers.state_dict()
    state.update({f"lang_encoder.gated_cross_attn_layers.{k}": v for k, v in xattn.items()})
    torch.save({**state, "vision_encoder.extra": torch.zeros(1)}, tmp_path / "checkpoint.pt")
    report = _load_checkpoint(fresh_model, str(tmp_path / "checkpoint.pt"), Progress())
    assert torch.all(fresh_model.perceiver.latents == 0.5)
    assert report["ignored"] == ["vision_encoder.extra"] and report["tensors"] == len(state) + 1
    lm = fresh_model.lang_encoder
    embeddings = {n for n, p in fresh_model.named_parameters()
                  if p is lm.get_input_embeddings().weight or p is lm.get_output_embeddings().weight}
    assert set(report["unloaded_trainable"]) == embeddings and len(embeddings) == 2

    # one cross-attention tensor short: refused, not half-loaded
    del state[next(k for k in state if k.startswith("lang_encoder.gated_cross_attn_layers."))]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(UnimpError, match="lacks 1 Perceiver/cross-attention tensors"):
        _load_checkpoint(fresh_model, str(tmp_path / "partial.pt"), Progress())


def test_custom_model_from_local_folders_with_a_checkpoint(dataset, tmp_path):
    """The real-preset path (from_pretrained, the LM's tokenizer, checkpoint, then UniMP tokens), offline."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from unimp_core.model.openflamingo.factory import register_tiny_vision
    from unimp_core.model.tokenizer import dataset_texts, train_bpe_tokenizer
    from unimp_core.model.openflamingo.spec import TinyModelSpec

    base = train_bpe_tokenizer(dataset_texts(dataset), 400)
    lm_dir = tmp_path / "lm"
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(base), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)).save_pretrained(lm_dir)
    base.save_pretrained(lm_dir)
    flamingo_size = len(base) + 3  # + <|endofchunk|>, <image>, <PAD>: what an OpenFlamingo checkpoint holds
    embed = torch.randn(flamingo_size, 32)
    spec = ModelSpec(preset="custom", vision=register_tiny_vision(TinyModelSpec()), lm=str(lm_dir),
                     cross_attn_every_n_layers=2, local_files_only=True)
    # an OpenFlamingo checkpoint of this model: its Perceiver and cross-attention, the input embeddings
    built = build_model(spec, n_items=5).model
    state = {k: v for k, v in built.state_dict().items()
             if k.startswith(("perceiver.", "lang_encoder.gated_cross_attn_layers."))}
    state.update({"lang_encoder.gpt_neox.embed_in.weight": embed,
                  "lang_encoder.gated_cross_attn_layers.1.attn_gate": torch.tensor([0.7])})
    torch.save(state, tmp_path / "ckpt.pt")
    bundle = build_model(spec.model_copy(update={"checkpoint": str(tmp_path / "ckpt.pt")}), n_items=5)
    assert bundle.checkpoint["ignored"] == [] and bundle.checkpoint["unloaded_trainable"] == ["lang_encoder.lm_head.weight"]
    lm = bundle.model.lang_encoder
    weight = lm.get_input_embeddings().weight
    assert weight.dtype == torch.float32 and weight.shape[0] == flamingo_size + 11 + 5
    torch.testing.assert_close(weight[:flamingo_size], embed)  # checkpoint loaded before the UniMP tokens
    torch.testing.assert_close(weight[flamingo_size:], embed.mean(0).expand(16, -1))
    assert lm.gated_cross_attn_layers[0] is None and lm.gated_cross_attn_layers[1].attn_gate.item() == pytest.approx(0.7)
    assert bundle.ids.items.tolist() == list(range(flamingo_size + 11, flamingo_size + 16))


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_tied_embeddings_stay_tied_through_resize_training_state_and_reload(arch, tmp_path):
    ds = make_dataset(12)
    bundle = build_model(ModelSpec(tiny={"lm_arch": arch, "layers": 1, "tie_embeddings": True}), items_text=ds, n_items=12)
    lm = bundle.model.lang_encoder
    inp, out = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    assert out is inp and inp.shape[0] == len(bundle.tokenizer)
    rows = inp[bundle.ids.items].detach()
    assert torch.cdist(rows, rows).add(torch.eye(len(rows))).min() > 0  # items still start distinct
    with torch.no_grad():
        inp[bundle.ids.items] += 1.0  # a trained state
    state = trainable_state(bundle.model)
    save_bundle(bundle, tmp_path)
    again = load_bundle(tmp_path)
    again.model.load_state_dict(state, strict=False)
    lm2 = again.model.lang_encoder
    assert lm2.get_output_embeddings().weight is lm2.get_input_embeddings().weight
    assert torch.equal(lm2.get_output_embeddings().weight, out)


def test_no_cross_attention_is_a_plain_lm_that_trains_saves_and_reloads(tmp_path):
    from open_flamingo.src.helpers import GatedCrossAttentionBlock

    ds = make_dataset(12)
    bundle = build_model(ModelSpec(cross_attn_every_n_layers=0, tiny={"layers": 2}), items_text=ds, n_items=12)
    assert not any(isinstance(m, GatedCrossAttentionBlock) for m in bundle.model.modules())
    tok = bundle.tokenizer
    enc = _batch(tok, [HISTORY + " next? <answer> item_5<|endofchunk|>"])
    images = _images(1, 1, bundle.image_size, 0)

    def unread(*args, **kwargs):
        raise AssertionError("nothing reads images: the vision tower and the Perceiver must not run")

    bundle.model.vision_encoder.forward = bundle.model.perceiver.forward = unread
    out = bundle.model(vision_x=images, lang_x=enc.input_ids, attention_mask=enc.attention_mask)
    out.logits[0, -2, bundle.ids.items[5]].backward()
    del bundle.model.vision_encoder.forward, bundle.model.perceiver.forward
    assert bundle.model.lang_encoder.get_input_embeddings().weight.grad is not None
    save_bundle(bundle, tmp_path)
    again = load_bundle(tmp_path)
    assert not any(isinstance(m, GatedCrossAttentionBlock) for m in again.model.modules())
    with torch.no_grad():
        ref = bundle.model(vision_x=images, lang_x=enc.input_ids, attention_mask=enc.attention_mask).logits
        got = again.model(vision_x=images, lang_x=enc.input_ids, attention_mask=enc.attention_mask).logits
    assert torch.equal(ref, got)
