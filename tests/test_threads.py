"""caex shared between threads (a web demo's pool, a notebook's background thread) and processes: each race is
interleaved on purpose, with events, so a test fails every time on the code that had it, not now and then."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing
import pickle
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from caex.classifier import TorchClassifier, load_classifier, save_bundle
from caex.classifier.arch import build_classifier_network
from caex.classifier.base import module_lock
from caex.errors import ClassifierError
from caex.explain.attribution import make_attributor
from caex.training import TrainConfig
from caex.training.trainer import _class_critic, _classifier_state_kept
from caex.utils.seed import global_rng_kept, seed_weights

SIZE = 16
NAMES = ["a", "b", "c"]
WAIT = 10  # seconds: an event that never comes fails the test instead of hanging it
BLOCKED = 0.3  # seconds another thread gets to run where it must wait (it ran within this on the racy code)


def training_classifier() -> TorchClassifier:
    """A module left in train mode (nn.Module's default), with batch norm and dropout: a prediction in train mode
    would differ, and change the running statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    return TorchClassifier(net.train(), NAMES, SIZE, 1)


def images(count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand((count, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


class HeldInThread:
    """``context`` entered in a thread of its own and held there until :meth:`leave`."""

    def __init__(self, context: contextlib.AbstractContextManager) -> None:
        self._entered, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(context,))
        self._thread.start()
        assert self._entered.wait(WAIT)

    def _hold(self, context: contextlib.AbstractContextManager) -> None:
        with context:
            self._entered.set()
            self._release.wait(WAIT)

    def leave(self) -> None:
        self._release.set()
        self._thread.join(WAIT)


def test_a_thread_leaving_evaluating_keeps_eval_mode_for_another_still_inside():
    """Thread B found eval mode (A set it) and saved nothing; A then restored train mode under B's forward pass:
    199 of 200 threaded predictions differed, and batch statistics changed for good."""
    classifier = training_classifier()
    net, x = classifier.module, images()
    expected = TorchClassifier(copy.deepcopy(net).eval(), NAMES, SIZE, 1).predict_proba(x)
    statistics = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    first = HeldInThread(classifier.evaluating())
    with classifier.evaluating():
        first.leave()
        assert not any(module.training for module in net.modules())
        assert torch.equal(classifier.predict_proba(x), expected)
    assert all(module.training for module in net.modules())  # the caller's mode again, once both left
    assert all(torch.equal(tensor, statistics[name]) for name, tensor in net.state_dict().items())


@contextlib.contextmanager
def class_critic_of(classifier: TorchClassifier) -> Iterator[None]:
    """What a ``train_cae`` does with the classifier for its critic: keeps its state, and freezes it in place."""
    config = dataclasses.replace(TrainConfig.preset("tiny"), dc="classifier")
    with _classifier_state_kept(classifier):
        critic = _class_critic(classifier, config, len(NAMES), torch.device("cpu"))
        assert critic is not None and critic.critic is classifier.logits_module  # in place, taking turns
        yield


def test_two_trainings_sharing_a_classifier_leave_its_parameters_trainable():
    """Two concurrent train_cae on one classifier: the second saved the first one's frozen parameters and gave
    them back as the caller's."""
    classifier = training_classifier()
    net = classifier.module
    first = HeldInThread(class_critic_of(classifier))
    with class_critic_of(classifier):
        first.leave()
        assert not any(parameter.requires_grad for parameter in net.parameters())  # still the critic's
    assert all(parameter.requires_grad for parameter in net.parameters())
    assert all(module.training for module in net.modules())


def test_fullgrad_records_only_its_own_threads_forward_pass():
    """FullGrad's hooks on the shared layers recorded another thread's no-grad forward pass too: "One of the
    differentiated Tensors does not require grad" in about half the calls beside predictions."""
    classifier = training_classifier()
    net, x = classifier.module, images()
    fullgrad = make_attributor("fullgrad", classifier)
    expected = fullgrad.attribute(x, 0)
    others: list[torch.Tensor] = []
    started = threading.Event()

    def plain_forward() -> None:
        with torch.no_grad():
            others.append(net(images(seed=2)))

    def forward_elsewhere(_module: nn.Module, _input: tuple, _output: torch.Tensor) -> None:
        if not started.is_set():  # once, during FullGrad's forward pass: another thread's runs through all its hooks
            started.set()
            thread = threading.Thread(target=plain_forward)
            thread.start()
            thread.join(WAIT)

    hook = net[0].register_forward_hook(forward_elsewhere)
    try:
        assert torch.equal(fullgrad.attribute(x, 0), expected)
    finally:
        hook.remove()
    assert len(others) == 1


@pytest.mark.parametrize("other", ["predict", "integrated_gradients"])
def test_no_forward_pass_runs_through_another_threads_grad_cam_hooks(other):
    """Grad-CAM hooks the shared layer and keeps one activation: a prediction (or a gradient method's forward
    pass) in another thread overwrote it ("appears to not have been used in the graph"). It now waits."""
    classifier = training_classifier()
    x, y = images(), images(seed=2)
    gradcam = make_attributor("gradcam", classifier)
    expected, expected_other = gradcam.attribute(x, 0), classifier.predict_proba(y)
    run_other: Callable[[], torch.Tensor] = (lambda: classifier.predict_proba(y)) if other == "predict" else (
        lambda: make_attributor("integrated_gradients", classifier, n_steps=4).attribute(y, 1))
    if other != "predict":
        expected_other = run_other()
    results: list[torch.Tensor] = []
    done = threading.Event()
    thread = threading.Thread(target=lambda: (results.append(run_other()), done.set()))

    def start_other(_module: nn.Module, _input: tuple, _output: torch.Tensor) -> None:
        if not thread.is_alive() and not done.is_set():  # once, inside Grad-CAM's forward pass
            thread.start()
            done.wait(BLOCKED)  # it ran to the end here; it must wait for Grad-CAM's batch instead

    hook = gradcam.module.register_forward_hook(start_other)  # Grad-CAM's forward pass, after the layer's
    try:
        maps = gradcam.attribute(x, 0)
    finally:
        hook.remove()
        thread.join(WAIT)
    assert torch.equal(maps, expected)
    assert torch.equal(results[0], expected_other)


def test_the_training_critic_takes_turns_with_grad_cam_on_the_callers_module():
    """train_cae ran the caller's own module as its class critic without the module's lock, so a Grad-CAM in
    another thread recorded the critic's forward pass."""
    import dataclasses

    from caex.training import TrainConfig
    from caex.training.trainer import _class_critic, _classifier_state_kept

    classifier = training_classifier()
    x, y = images(), images(seed=2)
    gradcam = make_attributor("gradcam", classifier)
    expected = gradcam.attribute(x, 0)
    config = dataclasses.replace(TrainConfig.preset("tiny"), dc="classifier")
    with _classifier_state_kept(classifier):
        critic = _class_critic(classifier, config, classifier.num_classes, torch.device("cpu"))
        done = threading.Event()
        thread = threading.Thread(target=lambda: (critic(y).sum(), done.set()))

        def start_critic(_module: nn.Module, _input: tuple, _output: torch.Tensor) -> None:
            if not thread.is_alive() and not done.is_set():  # once, inside Grad-CAM's forward pass
                thread.start()
                done.wait(BLOCKED)  # it ran to the end here; it must wait for Grad-CAM's batch instead

        hook = gradcam.module.register_forward_hook(start_critic)
        try:
            maps = gradcam.attribute(x, 0)
        finally:
            hook.remove()
            thread.join(WAIT)
    assert torch.equal(maps, expected) and done.is_set()


def test_a_module_lock_held_by_a_thread_does_not_hang_a_forked_child():
    """The locks are made afresh in a forked child (a DataLoader worker): one held by a thread of the parent at the
    fork would be held there for good."""
    classifier = training_classifier()
    held = HeldInThread(module_lock(classifier.module))
    try:
        child = multiprocessing.get_context("fork").Process(target=classifier.predict_proba, args=(images(),))
        child.start()
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        held.leave()


def _entered_and_left(make: Callable[[], contextlib.AbstractContextManager]) -> None:
    with make():
        pass


@pytest.mark.parametrize("held", ["quiet", "seeded section"])
def test_caex_s_process_wide_locks_held_by_a_thread_do_not_hang_a_forked_child(held):
    """caex's quiet() blocks and seeded sections take process-wide locks; one held by another thread of the parent
    at the fork would be held in the child for good, and its next caex call that takes it would never return."""
    from caex.utils.warn import quiet

    make = (lambda: quiet(FutureWarning)) if held == "quiet" else (lambda: global_rng_kept(torch.device("cpu")))
    holder = HeldInThread(make())
    child = multiprocessing.get_context("fork").Process(target=_entered_and_left, args=(make,))
    try:
        child.start()
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
        holder.leave()


def test_lime_leaves_other_threads_draws_alone():
    """LIME put torch's global generator back after its fits (fork_rng), rewinding the draws another thread made
    meanwhile: 9,068 of 10,349 draws of a notebook's main thread repeated."""
    classifier = training_classifier()
    x = images(2)
    lime = make_attributor("lime", classifier, n_samples=40, n_segments=6)
    serial = lime.attribute(x, [0, 1])
    state = torch.get_rng_state()
    assert torch.equal(lime.attribute(x, [0, 1]), serial)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from it (Captum's fit drew twice)

    lime_started, drawn = threading.Event(), threading.Event()

    def draw_elsewhere(_module: nn.Module, _input: tuple, _output: torch.Tensor) -> None:
        if not lime_started.is_set():  # once, during LIME's first prediction: the main thread draws meanwhile
            lime_started.set()
            drawn.wait(WAIT)

    maps: list[torch.Tensor] = []
    hook = classifier.module.register_forward_hook(draw_elsewhere)
    try:
        thread = threading.Thread(target=lambda: maps.append(lime.attribute(x, [0, 1])))
        thread.start()
        assert lime_started.wait(WAIT)
        first = torch.rand(4)
        drawn.set()
        thread.join(WAIT)
    finally:
        hook.remove()
    assert not torch.equal(torch.rand(4), first)  # not the same draw again
    assert torch.equal(maps[0], serial)


def test_lime_maps_of_two_threads_equal_serial_ones():
    classifier = training_classifier()
    lime = make_attributor("lime", classifier, n_samples=40, n_segments=6)
    inputs = [images(2, seed) for seed in (1, 2)]
    serial = [lime.attribute(x, [0, 1]) for x in inputs]
    maps: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: maps.__setitem__(i, lime.attribute(inputs[i], [0, 1])))
               for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all(torch.equal(maps[i], serial[i]) for i in (0, 1))


def test_seeded_sections_of_two_threads_run_one_after_the_other():
    """Two train_classifier calls with other seeds in threads gave other weights than one after the other (2 of 5
    trials): the second seeded the global generator while the first drew its weights from it."""
    expected = {}
    for seed in (0, 1):
        with global_rng_kept(torch.device("cpu")):
            seed_weights(seed)
            expected[seed] = torch.rand(3)
    caller = torch.get_rng_state()
    seeded, other_seeded, drawn = threading.Event(), threading.Event(), threading.Event()
    draws: dict[int, torch.Tensor] = {}

    def other() -> None:
        with global_rng_kept(torch.device("cpu")):
            seed_weights(1)
            other_seeded.set()
            drawn.wait(BLOCKED)  # inside while the first draws, where both may be inside at once
            draws[1] = torch.rand(3)

    def first() -> None:
        with global_rng_kept(torch.device("cpu")):
            seed_weights(0)
            seeded.set()
            other_seeded.wait(BLOCKED)  # the other thread seeded within this; it must wait instead
            draws[0] = torch.rand(3)
            drawn.set()

    threads = [threading.Thread(target=first), threading.Thread(target=other)]
    threads[0].start()
    assert seeded.wait(WAIT)
    threads[1].start()
    for thread in threads:
        thread.join(WAIT)
    assert torch.equal(draws[0], expected[0]) and torch.equal(draws[1], expected[1])
    assert torch.equal(torch.get_rng_state(), caller)


def test_loading_weights_neither_waits_for_nor_draws_from_a_seeded_section(tmp_path):
    """Building a network to load weights into drew its initial weights from the global generator, which would
    come from another thread's seeded stream; and waiting for that thread's lock would wait for a whole training.
    The network is built on the meta device, so nothing is drawn."""
    path = tmp_path / "weights.safetensors"
    torch.manual_seed(0)
    saved = build_classifier_network("smallcnn", channels=1, num_classes=3)
    save_file(saved.state_dict(), str(path))
    seeded, loaded = threading.Event(), threading.Event()
    loaded_meanwhile, streams = [], []

    def seeded_section() -> None:
        with global_rng_kept(torch.device("cpu")):
            seed_weights(0)
            seeded.set()
            loaded_meanwhile.append(loaded.wait(WAIT))  # the load ran to the end within this
            streams.append(torch.rand(3))

    thread = threading.Thread(target=seeded_section)
    thread.start()
    assert seeded.wait(WAIT)
    classifier = load_classifier(path, arch="smallcnn", class_names=NAMES, device="cpu")
    loaded.set()
    thread.join(WAIT)
    seed_weights(0)
    assert loaded_meanwhile == [True] and torch.equal(streams[0], torch.rand(3))  # the seeded stream untouched
    images = torch.rand(2, 1, SIZE, SIZE)
    torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(saved.eval()(images), dim=1))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("threads") / "clf"
    torch.manual_seed(0)
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE)
    save_bundle(net, folder, class_names=NAMES, image_size=SIZE, onnx=True)
    return folder


@pytest.mark.parametrize("name", ["classifier.torchscript.pt", "classifier.onnx"])
def test_exported_classifiers_pickle_by_loading_their_file_again(exports, name, monkeypatch):
    """Spawn-based DataLoader workers need the classifier pickled: TorchScript and onnxruntime refused it."""
    monkeypatch.chdir(exports)
    classifier = load_classifier(name, batch_size=5, device="cpu")  # relative: pickled as the file, not the text
    monkeypatch.chdir(exports.parent)
    copied = pickle.loads(pickle.dumps(classifier))
    assert type(copied) is type(classifier) and copied.source == str(exports / name)
    assert copied.batch_size == 5 and copied.class_names == NAMES
    assert torch.equal(copied.predict_proba(images()), classifier.predict_proba(images()))


def test_a_torchscript_module_of_unknown_file_says_how_to_load_it_in_each_process():
    module = torch.jit.script(training_classifier().module)
    classifier = TorchClassifier(module, NAMES, SIZE, 1)
    with pytest.raises(ClassifierError, match=r"cannot be pickled .*caex\.load_classifier\(path\)$"):
        pickle.dumps(classifier)
    copied = copy.deepcopy(classifier)  # a copy in this process copies the module, as before
    assert copied.module is not module
    assert torch.equal(copied.predict_proba(images()), classifier.predict_proba(images()))


def test_caex_s_quiet_blocks_take_turns_and_leave_the_filters_as_they_were(exports):
    """catch_warnings is process-wide: threads loading TorchScript files (which hushes torch's FutureWarning)
    left an "ignore FutureWarning" filter for good when they left it out of order."""
    from caex.utils.warn import quiet

    filters = list(warnings.filters)
    inside, leave, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with quiet(FutureWarning):
            inside.set()
            leave.wait(WAIT)

    def second() -> None:
        with quiet(UserWarning):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(WAIT)
    threads[1].start()
    assert not second_in.wait(BLOCKED)  # it waits for the first block to end
    leave.set()
    for thread in threads:
        thread.join(WAIT)
    assert second_in.is_set() and warnings.filters == filters
    loads = [threading.Thread(target=lambda: [load_classifier(exports / "classifier.torchscript.pt", device="cpu")
                                            for _ in range(3)]) for _ in range(3)]
    for thread in loads:
        thread.start()
    for thread in loads:
        thread.join(WAIT * 3)
    assert warnings.filters == filters
