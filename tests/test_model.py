"""CAE networks, config presets and the saved bundle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch

from caex.errors import ModelError
from caex.model import CAE, CAEConfig, Discriminator
from caex.model import cae as cae_module
from caex.model.blocks import LayerNorm, Upsample2x, adaptive_instance_norm


def _tiny(size: int = 32, channels: int = 1, num_classes: int = 2, **overrides) -> CAEConfig:
    return CAEConfig.preset("tiny", image_size=size, channels=channels, num_classes=num_classes, **overrides)


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_shapes_and_ranges(size: int, channels: int, num_classes: int) -> None:
    torch.manual_seed(0)
    config = _tiny(size, channels, num_classes)
    cae, disc = CAE(config), Discriminator(config)
    x = torch.rand(3, channels, size, size)
    c, s = cae.encode(x)
    assert c.shape == (3, config.code_dim)
    assert s.shape == (3, config.individual_channels, config.individual_size, config.individual_size)
    y = cae.decode(c, s)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert cae.swap(x, x.flip(0)).shape == x.shape
    real_logits, class_logits = disc(x * 2 - 1)
    assert real_logits.shape == (3, 2) and class_logits.shape == (3, num_classes)


def test_class_code_enters_decoder_only_through_adain() -> None:
    torch.manual_seed(0)
    cae = CAE(_tiny())
    _, s = cae.encode(torch.rand(2, 1, 32, 32))
    c = torch.randn(2, 8)
    # Identical individual codes, different class codes -> different images; the MLP is the only path.
    assert not torch.allclose(cae.decode(c, s), cae.decode(c.flip(0), s))
    with torch.no_grad():
        for p in cae.decoder.mlp.parameters():
            p.zero_()
    assert torch.equal(cae.decode(c, s), cae.decode(c.flip(0), s))


@pytest.mark.parametrize(("pool", "reduce"), [("avg", torch.mean), ("max", torch.amax)])
def test_class_code_is_the_chosen_global_pool_of_the_projected_features(pool: str, reduce) -> None:
    torch.manual_seed(0)
    cae = CAE(_tiny(class_pool=pool))
    x = torch.rand(2, 1, 32, 32)
    projected = cae.class_encoder.net[:-2](x * 2 - 1)  # everything before the pooling: [2, code_dim, h, w]
    assert projected.shape[:2] == (2, 8) and projected.shape[2] > 1
    assert torch.allclose(cae.encode(x)[0], reduce(projected, dim=(2, 3)), atol=1e-6)


def test_upsample2x_equals_nearest_upsampling_forward_and_backward() -> None:
    x = torch.randn(3, 5, 4, 6, requires_grad=True)
    reference = torch.nn.Upsample(scale_factor=2, mode="nearest")(x)
    ours = Upsample2x()(x)
    assert ours.shape == (3, 5, 8, 12) and torch.equal(ours, reference)
    weights = torch.randn_like(ours)
    (expected,) = torch.autograd.grad((reference * weights).sum(), x)
    (got,) = torch.autograd.grad((ours * weights).sum(), x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_adain_and_layernorm_known_values() -> None:
    x = torch.randn(2, 3, 5, 5)
    out = adaptive_instance_norm(x, torch.full((2, 3), 1.0), torch.full((2, 3), 0.5))
    assert torch.allclose(out.mean(dim=(2, 3)), torch.full((2, 3), 0.5), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.full((2, 3), 2.0), atol=1e-3)
    ln = LayerNorm(3)(x)
    assert torch.allclose(ln.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)


def test_presets_and_json_round_trip() -> None:
    paper = CAEConfig.preset("paper", image_size=256, channels=3, num_classes=2)
    assert (paper.width, paper.n_down_class, paper.n_down_individual, paper.n_res, paper.mlp_dim) == (64, 4, 2, 6, 256)
    assert paper.individual_channels == 256 and paper.code_dim == 8
    small = CAEConfig.preset("small", image_size=64, channels=1, num_classes=4, n_res=3)
    assert small.n_res == 3
    assert CAEConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="huge"), "unknown CAE preset 'huge'"),
    (dict(name="tiny", bogus=1), "unknown CAEConfig field(s): bogus"),
    (dict(name="tiny", num_classes=1), "at least 2 classes"),
    (dict(name="tiny", image_size=30, n_down_individual=2), "image_size=30: must be divisible by "
                                                            "2**n_down_individual=4 so the decoder restores the "
                                                            "size (--size 28 or 32)"),
    (dict(name="paper", image_size=28), "too many down-samplings for image_size=28 (--size 32 at least)"),
    (dict(name="tiny", n_down_individual=6), "image_size=32: must be divisible by 2**n_down_individual=64 so the "
                                             "decoder restores the size (--size 128)"),  # not 0 or 64: too small
    (dict(name="tiny", image_size=48, n_down_individual=5), "image_size=48: must be divisible by "
                                                            "2**n_down_individual=32 so the decoder restores the size "
                                                            "(--size 64)"),  # not 32, which leaves 1 pixel
    # a 1x1 individual code passed, and training failed in its instance norm ("more than 1 spatial element")
    (dict(name="tiny", n_down_individual=5), "n_down_individual=5: too many down-samplings for image_size=32 "
                                             "(--size 64 at least)"),
    (dict(name="tiny", class_pool="median"), "class_pool='median': must be 'avg' or 'max'"),
    (dict(name="tiny", n_res=0), "n_res=0: must be >= 1 (the class code reaches the decoder only through"),
    (dict(name="tiny", pad_type="foo"), "pad_type='foo': must be one of reflect, zeros, replicate"),
])
def test_config_errors(kwargs: dict, message: str) -> None:
    args = dict(image_size=32, channels=1, num_classes=2) | kwargs
    with pytest.raises(ModelError, match=re.escape(message)):
        CAEConfig.preset(args.pop("name"), **args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=8.0), "CAEConfig.width=8.0: must be a whole number"),
    (dict(image_size="64"), "CAEConfig.image_size='64': must be a whole number"),
    (dict(n_res=True), "CAEConfig.n_res=True: must be a whole number"),
    (dict(num_classes=2.5), "CAEConfig.num_classes=2.5: must be a whole number"),
])
def test_config_refuses_integer_fields_that_are_not_whole_numbers(kwargs: dict, message: str) -> None:
    """width=8.0 passed the old int(value) check and failed inside the networks."""
    args = dict(image_size=32, channels=1, num_classes=2) | kwargs
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        CAEConfig.preset("tiny", **args)


def test_overrides_are_typed_by_their_field_and_reach_the_preset() -> None:
    overrides = CAEConfig.parse_overrides(["n_res=3", "class-pool=avg", "disc_dropout=0.25"])
    assert overrides == {"n_res": 3, "class_pool": "avg", "disc_dropout": 0.25}
    config = CAEConfig.preset("small", image_size=64, channels=1, num_classes=4, **overrides)
    assert (config.n_res, config.class_pool, config.disc_dropout, config.width) == (3, "avg", 0.25, 8)
    with pytest.raises(ModelError, match="^override 'channels=3': expected KEY=VALUE"):
        CAEConfig.parse_overrides(["channels=3"])  # the data decides it
    with pytest.raises(ModelError, match="^-m 'width=1.5': width must be an integer"):
        CAEConfig.parse_overrides(["width=1.5"], option="-m")


def test_bundle_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    cae = CAE(_tiny(num_classes=3), class_names=["a", "b", "c"]).eval()
    x = torch.rand(6, 1, 32, 32)
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    cae.set_train_codes(cae.class_codes(x, batch_size=4), labels)
    assert torch.isnan(cae.centroids[2]).all()  # no training code of class c
    assert torch.allclose(cae.centroids[1], cae.train_codes[2:5].mean(0))
    cae.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.safetensors", "config.json", "model.safetensors"]
    loaded = CAE.load(tmp_path, device="cpu")
    assert loaded.class_names == ["a", "b", "c"] and loaded.config == cae.config and loaded.data_spec is None
    c, s = cae.encode(x)
    c2, s2 = loaded.encode(x)
    assert torch.equal(c, c2) and torch.equal(s, s2)
    assert torch.equal(cae.decode(c, s), loaded.decode(c2, s2))
    assert torch.equal(loaded.train_labels, labels)
    assert torch.equal(loaded.train_codes, cae.train_codes)


def test_save_cut_short_over_an_older_bundle_is_not_a_finished_run(tmp_path, monkeypatch) -> None:
    """A resumed run to more iterations died while saving: new weights beside the old codes and config.json
    loaded as a finished run, whose stored training codes were another model's."""
    old = CAE(_tiny(num_classes=2))
    old.set_train_codes(torch.zeros(4, old.config.code_dim), torch.tensor([0, 0, 1, 1]))
    old.save(tmp_path)
    real = cae_module.atomic_write_bytes

    def write(path, data):
        if path.name == "codes.safetensors":
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(cae_module, "atomic_write_bytes", write)
    new = CAE(_tiny(num_classes=2))
    new.set_train_codes(torch.ones(4, new.config.code_dim), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path)
    with pytest.raises(ModelError, match="config.json: missing"):
        CAE.load(tmp_path)


def test_a_cae_saved_without_codes_over_an_older_run_loads_without_them(tmp_path) -> None:
    """The older run's codes.safetensors stayed, so the new weights loaded with another model's centroids."""
    old = CAE(_tiny(num_classes=2))
    old.set_train_codes(torch.zeros(4, old.config.code_dim), torch.tensor([0, 0, 1, 1]))
    old.save(tmp_path)
    CAE(_tiny(num_classes=2)).save(tmp_path)
    assert not (tmp_path / "codes.safetensors").exists() and CAE.load(tmp_path).train_codes is None


def test_stored_codes_that_do_not_fit_the_cae_name_their_file(tmp_path) -> None:
    """Codes of another width, or labels outside the classes, raised without a path or as an IndexError."""
    cae = CAE(_tiny(num_classes=2))
    codes_path = tmp_path / "codes.safetensors"
    cae.save(tmp_path)
    for codes, labels, problem in [(torch.zeros(2, 3), torch.tensor([0, 1]), r"train codes must be \[N, 8\]"),
                                   (torch.zeros(2, 8), torch.tensor([0, 7]), r"train labels must lie in 0\.\.1, "
                                                                             r"got 0\.\.7")]:
        codes_path.write_bytes(safetensors.torch.save({"train_codes": codes, "train_labels": labels}))
        with pytest.raises(ModelError, match=rf"^{re.escape(str(codes_path))}: {problem}"):
            CAE.load(tmp_path)
    with pytest.raises(ModelError, match=r"^CAE config has unknown field\(s\): new_field \(a typo, or written by "
                                         r"a newer caex\)$"):
        CAEConfig.from_dict({**cae.config.to_dict(), "new_field": 1})


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such CAE run folder"):
        CAE.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="config.json: missing"):
        CAE.load(tmp_path)
    CAE(_tiny()).save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="model.safetensors: not a readable safetensors file"):
        CAE.load(tmp_path)
    CAE(_tiny(width=4)).save(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match="weights do not match the CAE config"):
        CAE.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable CAE config"):
        CAE.load(tmp_path)
    CAE(_tiny()).save(tmp_path / "typo")
    meta = json.loads((tmp_path / "typo" / "config.json").read_text())
    meta["config"]["n_res"] = "two"
    (tmp_path / "typo" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"config\.json: CAEConfig\.n_res='two': must be a whole number$"):
        CAE.load(tmp_path / "typo")
    meta["config"]["n_res"], meta["class_names"] = 2, ["only one"]  # parses, but describes no valid CAE
    (tmp_path / "typo" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path / 'typo' / 'config.json'))}: 1 class names"):
        CAE.load(tmp_path / "typo")
    meta["class_names"], meta["version"] = None, 99  # a later caex's format is refused, not misread
    (tmp_path / "typo" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"config\.json: written by a newer caex \(format version 99, this caex "
                                         r"reads 1\); upgrade caex$"):
        CAE.load(tmp_path / "typo")
    CAE(_tiny(width=2 * CAEConfig.__dataclass_fields__["width"].default)).save(tmp_path / "edited")
    meta = json.loads((tmp_path / "edited" / "config.json").read_text())
    meta["config"].pop("width")  # the default width is assumed, and the weights refute it
    (tmp_path / "edited" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"weights do not match the CAE config .*config.json lacks width, so "
                                         r"defaults were assumed"):
        CAE.load(tmp_path / "edited")


def test_fresh_class_codes_differ_between_images() -> None:
    """He init keeps the class encoder's output spread across images (PyTorch's default init gave
    ~1e-3 relative spread, after which the code collapsed to a constant during training)."""
    cae = CAE(CAEConfig.preset("small", image_size=64, channels=1, num_classes=4))
    images = torch.rand(32, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes, _ = cae.encode(images)
    relative_spread = codes.std(dim=0).mean() / codes.abs().mean()
    assert relative_spread > 0.02


def test_encode_refuses_a_single_image_and_casts_float64() -> None:
    """A [C, H, W] image went through the convolutions as unbatched and came out as a [D, 1] 'class code';
    float64 images (NumPy's default) raised torch's dtype mismatch."""
    cae = CAE(_tiny())
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match=r"got Tensor of shape \(1, 32, 32\) \(one image: images\[None\]\)"):
        cae.encode(x[0])
    with pytest.raises(ModelError, match=r"\[B, 1, 32, 32\] images, got shape \(2, 3, 32, 32\)"):
        cae.swap(x, x.expand(-1, 3, -1, -1))
    with pytest.raises(ModelError, match="got torch.uint8"):
        cae.encode((x * 255).to(torch.uint8))
    codes, individual = cae.encode(x.double())
    assert codes.dtype == individual.dtype == torch.float32 and torch.equal(codes, cae.encode(x)[0])


@pytest.mark.parametrize("images, message", [
    (torch.full((2, 1, 32, 32), 200.0), r"values span \[200, 200\]; expected the data range \[0, 1\]"),
    (torch.full((2, 1, 32, 32), float("nan")), "holds NaN or infinite pixels"),
    (torch.rand(2, 1, 48, 48), r"expected \[B, 1, 32, 32\] images, got shape \(2, 1, 48, 48\)"),
])
def test_encode_refuses_images_outside_its_range_or_size(images, message) -> None:
    """0..255 pixels gave codes in the thousands, and other sizes an individual code the decoder cannot take."""
    with pytest.raises(ModelError, match=f"^CAE input: {message}"):
        CAE(_tiny()).encode(images)


def test_decode_checks_code_shapes_and_casts_float64() -> None:
    cae = CAE(_tiny())
    with torch.no_grad():
        codes, individual = cae.encode(torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
        torch.testing.assert_close(cae.decode(codes.double(), individual.double()), cae.decode(codes, individual))
        shapes = rf"class codes \[B, 8\] and individual codes \[B, {', '.join(map(str, individual.shape[1:]))}\]"
        for bad_codes, bad_individual in ((codes[:, :4], individual), (codes[:2], individual),
                                          (codes, individual[:, :1]), (codes[0], individual)):
            with pytest.raises(ModelError, match=f"^decode: expected {shapes} for this CAE, got"):
                cae.decode(bad_codes, bad_individual)


def test_encode_individual_is_encodes_second_half() -> None:
    cae = CAE(_tiny())
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(cae.encode_individual(x), cae.encode(x)[1])
    with pytest.raises(ModelError, match="CAE input: expected float pixels"):
        cae.encode_individual((x * 255).to(torch.uint8))


def test_swap_takes_one_partner_per_image_or_one_for_all() -> None:
    cae = CAE(_tiny())
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one_for_all = cae.swap(x, x[:1])
        torch.testing.assert_close(one_for_all, cae.swap(x, x[:1].expand(4, -1, -1, -1)))
        with pytest.raises(ModelError, match=r"^swap: 2 images in B for 4 in A; give 1 or 4"):
            cae.swap(x, x[:2])
        torch.testing.assert_close(cae.class_codes(x.numpy()), cae.class_codes(x))


def test_class_codes_checks_and_casts_its_input_like_encode() -> None:
    """It hard-coded float32, so a float64 CAE raised torch's dtype mismatch, and skipped the channel check."""
    cae = CAE(_tiny())
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(cae.class_codes(x, batch_size=2), cae.encode(x)[0])
        wide = CAE(_tiny()).double()
        wide.load_state_dict(cae.double().state_dict())
        codes = wide.class_codes(x, batch_size=2)
    assert codes.dtype == torch.float32 and torch.allclose(codes, cae.encode(x)[0].float(), atol=1e-5)
    with pytest.raises(ModelError, match=r"expected \[B, 1, 32, 32\] images, got shape \(5, 3, 32, 32\)"):
        cae.class_codes(x.expand(-1, 3, -1, -1))


def test_class_codes_show_progress_only_when_asked(capsys) -> None:
    """The end-of-training codes of 100,000 images took minutes without a word after the training bar ended."""
    cae = CAE(_tiny())
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    quiet = cae.class_codes(x, batch_size=2)
    assert capsys.readouterr().err == ""
    torch.testing.assert_close(cae.class_codes(x, batch_size=2, verbose=True), quiet)
    bar = capsys.readouterr().err
    assert "class codes: 100%" in bar and "3/3" in bar


def test_loading_a_cae_or_a_classifier_leaves_the_global_random_stream_alone(tmp_path) -> None:
    """Building the networks before loading their weights drew from the caller's seeded stream."""
    from caex.classifier import build_classifier_network, load_classifier, save_bundle

    CAE(CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2), ["a", "b"]).save(tmp_path / "cae")
    save_bundle(build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16), tmp_path / "clf",
                class_names=["a", "b"], image_size=16)
    for load in (lambda: CAE.load(tmp_path / "cae", device="cpu"),
                 lambda: load_classifier(str(tmp_path / "clf" / "classifier.safetensors"), arch="smallcnn")):
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        load()
        assert torch.equal(torch.rand(3), expected)


def _saved_with_config(folder: Path, **changes: object) -> None:
    """A tiny CAE saved to ``folder`` whose config.json then gets ``changes`` (``config`` merged into its own)."""
    CAE(_tiny()).save(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(changes.pop("config", {}))
    (folder / "config.json").write_text(json.dumps({**meta, **changes}))


def test_a_config_whose_class_names_are_no_list_of_names_is_one_line(tmp_path) -> None:
    _saved_with_config(tmp_path, class_names=5)
    with pytest.raises(ModelError, match=r"config\.json: class_names must be a list of names, got 5$"):
        CAE.load(tmp_path)


@pytest.mark.parametrize(("names", "message"), [
    (["a", "a"], "class name 'a' is given twice in class_names"),  # explain --all-targets overwrote files
    (["../../x", "b"], "class name '../../x' in class_names contains '/'"),  # and wrote outside --out
    (["a", 1], "class name 1 in class_names is not a non-empty string"),
    (["..", "b"], "class name '..' in class_names is not a non-empty string that can name a file"),
])
def test_a_config_whose_class_names_cannot_name_files_is_refused(tmp_path, names, message) -> None:
    _saved_with_config(tmp_path, class_names=names)
    with pytest.raises(ModelError, match=f"^{re.escape(str(tmp_path / 'config.json'))}: {re.escape(message)}"):
        CAE.load(tmp_path)


def test_a_config_asking_for_a_huge_network_is_refused_before_it_is_built(tmp_path) -> None:
    """width: 1000000 made CAE.load allocate 128 TB before the weights' shapes were compared."""
    _saved_with_config(tmp_path, config={"width": 1_000_000})
    with pytest.raises(ModelError, match=r"model\.safetensors: weights do not match the CAE config \(size mismatch "
                                         r"for .*the config asks for \[1000000, "):
        CAE.load(tmp_path)


def test_a_config_with_a_fractional_size_is_refused(tmp_path) -> None:
    _saved_with_config(tmp_path, config={"image_size": 32.0})
    with pytest.raises(ModelError, match=r"config\.json: CAEConfig\.image_size=32\.0: must be a whole number$"):
        CAE.load(tmp_path)


def test_loading_a_model_again_and_again_keeps_no_memory(tmp_path) -> None:
    """safetensors' load_file kept about 2 KB for good per call (a service reloading its model per request grew
    without end); caex reads the file whole instead."""
    import tracemalloc

    from safetensors.torch import save_file

    from caex.utils.io import read_safetensors

    path = tmp_path / "weights.safetensors"
    tensors = {f"t{index}": torch.full((4, 4), float(index)) for index in range(28)}
    save_file(tensors, str(path))
    assert all(torch.equal(read_safetensors(path)[name], tensor) for name, tensor in tensors.items())
    for _ in range(20):  # warm-up
        read_safetensors(path)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(300):
            read_safetensors(path)
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # load_file: about 460 KB over 300 calls
