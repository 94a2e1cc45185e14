"""Training (a few real steps, resumed) and evaluation on a small real dataset folder."""

import csv
import json
import shutil
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import tifffile
import torch

from promptseg_cli.model.network import CPNConfig
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.model.widen import widen
from promptseg_cli.progress import Reporter
from promptseg_cli.training.train import DataSpec, TrainConfig, train
from promptseg_cli.training.datasets import load_samples, pack_dataset, validation_ids
from promptseg_cli.training.simulate import simulate_tissue

from test_cli import promptseg


@pytest.fixture()
def tiny_dataset(tmp_path, data):
    """Four real dsb2018 images (two kinds) in the shared layout."""
    source = data / "dsb2018"
    with open(source / "index.csv") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["kind"] == "fluorescence"][:3] + [r for r in rows if r["kind"] == "color"][:1]
    folder = tmp_path / "tiny"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for r in chosen:
        shutil.copy(source / "images" / f"{r['id']}.png", folder / "images")
        shutil.copy(source / "labels" / f"{r['id']}.tif", folder / "labels")
    with open(folder / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return folder


def test_train_few_steps_then_resume(tmp_path, tiny_dataset):
    run_dir = tmp_path / "run"
    args = ["train", "--data", f"{tiny_dataset}:nuclei", "--batch-size", "2", "--crop", "64", "--workers", "0",
            "--simulate-weight", "0.5", "--device", "cpu", "-o", run_dir]
    first = promptseg(*args, "--steps", "3")
    assert first.returncode == 0, first.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    second = promptseg(*args, "--steps", "5")
    assert second.returncode == 0, second.stderr
    assert "resumed" in second.stderr
    records = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) for r in records)
    model = load_model(run_dir / "model.pt")
    assert model.metadata["trained_steps"] == 5 and model.native_mpp == 0.5
    assert model.metadata["prompts"] == ["nuclei", "cells"] and "nucleus" in model.metadata["synonyms"]["nuclei"]
    assert model.metadata["score_threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8) and model.metadata["threshold_search"]["grid"]
    assert model.metadata["training"]["data"][0]["dataset"] == "tiny"


class InterruptedAfter(Reporter):
    """Progress that stops the run (as Ctrl-C does) when it is told a step past ``steps`` is done."""

    def __init__(self, steps: int):
        super().__init__(quiet=True)
        self.steps = steps

    @contextmanager
    def task(self, description, total, completed=0):
        done = completed

        def advance(n, status=""):
            nonlocal done
            done += n
            if done > self.steps:
                raise KeyboardInterrupt

        yield advance


def test_a_run_interrupted_and_resumed_trains_on_what_an_uninterrupted_run_does(tmp_path, tiny_dataset):
    """Each step's crops and loss picks depend on the seed and the step alone: a run stopped after its step-2
    checkpoint (one step later) and resumed, with other numbers of loader processes, logs the losses of a run that
    went straight through, and ends with its weights."""
    def config(output, workers):
        return TrainConfig(data=[DataSpec(tiny_dataset, "nuclei")], output=tmp_path / output, simulate_weight=0.5,
                           steps=4, batch_size=2, crop=64, workers=workers, checkpoint_every=2, seed=7)

    straight = train(config("straight", workers=0), Reporter(quiet=True))
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed", workers=2), InterruptedAfter(2))
    assert [json.loads(line)["step"] for line in (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()] == [1, 2, 3]
    resumed = train(config("resumed", workers=1), Reporter(quiet=True))

    def losses(path):
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                for line in (path.parent / "losses.jsonl").read_text().splitlines()]

    assert [r["step"] for r in losses(resumed)] == [1, 2, 3, 4]
    assert losses(resumed) == losses(straight)
    resumed_weights = load_model(resumed).network.state_dict()
    for name, value in load_model(straight).network.state_dict().items():
        assert torch.equal(resumed_weights[name], value), name


def test_minutes_fit_the_number_of_steps_to_the_time_and_the_run_is_the_one_those_steps_give(tmp_path, tiny_dataset):
    """With a time budget the warm-up steps are timed and the total set from their speed; the run then logs what a
    run told that total logs, its schedule ends at its last step, and resuming it keeps the total."""
    def config(output, **options):
        return TrainConfig(data=[DataSpec(tiny_dataset, "nuclei")], output=tmp_path / output, simulate_weight=0.5,
                           batch_size=2, crop=64, workers=0, warmup=4, seed=3, lr=1e-3, **options)

    def losses(path):
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                for line in (path.parent / "losses.jsonl").read_text().splitlines()]

    timed = train(config("timed", steps=100_000, minutes=0.05), Reporter(quiet=True))
    steps = load_model(timed).metadata["training"]["steps"]
    assert 4 < steps < 100_000 and load_model(timed).metadata["trained_steps"] == steps
    assert [r["step"] for r in losses(timed)] == list(range(1, steps + 1))
    assert losses(timed)[-1]["lr"] == pytest.approx(0.05 * 1e-3)
    assert losses(train(config("fixed", steps=steps), Reporter(quiet=True))) == losses(timed)
    again = train(config("timed", steps=100_000, minutes=0.05), Reporter(quiet=True))
    assert len(losses(again)) == steps and load_model(again).metadata["trained_steps"] == steps
    assert promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--minutes", "0", "-o", tmp_path / "x").returncode == 2
    refused = promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--contour-pixels", "0", "-o", tmp_path / "y")
    assert refused.returncode == 2 and "--contour-pixels must be at least 1, got 0" in refused.stderr and not (tmp_path / "y").exists()


def test_fine_tuning_starts_from_the_given_model(tmp_path, tiny_dataset):
    """--init loads the weights: with a negligible learning rate the convolutions stay the shipped model's; the
    contour losses count with the --contour-weight given, the area loss with the --area-weight given."""
    run = promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--batch-size", "2", "--crop", "64", "--workers", "0",
                    "--steps", "2", "--lr", "1e-12", "--device", "cpu", "--init", "default", "--contour-weight", "0.5",
                    "--area-weight", "0.25",
                    "-o", tmp_path / "ft")
    assert run.returncode == 0, run.stderr
    for record in map(json.loads, (tmp_path / "ft" / "losses.jsonl").read_text().splitlines()):
        assert record["contour"] > 0 and record["area"] > 0
        assert record["loss"] == pytest.approx(record["objectness"] + 0.5 * (record["contour"] + record["refined"])
                                               + 0.25 * record["area"], abs=1e-4)
    assert "fine-tuning from" in run.stderr
    tuned, shipped = load_model(tmp_path / "ft" / "model.pt"), load_model()
    conv = "stem.0.0.weight"
    tuned_state, shipped_state = tuned.network.state_dict(), shipped.network.state_dict()
    assert conv in shipped_state
    for name, value in shipped_state.items():
        if name.endswith("weight") and value.ndim == 4:
            assert np.allclose(tuned_state[name].numpy(), value.numpy(), atol=1e-6), name
    assert tuned.metadata["training"]["init"]["version"] == shipped.version
    assert tuned.metadata["training"]["contour_weight"] == 0.5 and tuned.metadata["training"]["area_weight"] == 0.25
    missing = promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--init", tmp_path / "nope.pt", "-o", tmp_path / "x")
    assert missing.returncode == 2 and "model file not found" in missing.stderr


def test_frozen_norm_fine_tuning_keeps_the_running_statistics(tmp_path, tiny_dataset):
    """--frozen-norm trains the weights (BatchNorm's scale and shift included) while BatchNorm normalises with, and
    keeps, the running statistics that inference uses."""
    run = promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--batch-size", "2", "--crop", "64", "--workers", "0",
                    "--steps", "3", "--lr", "1e-3", "--device", "cpu", "--init", "default", "--frozen-norm",
                    "-o", tmp_path / "frozen")
    assert run.returncode == 0, run.stderr
    tuned = load_model(tmp_path / "frozen" / "model.pt")
    tuned_state, shipped_state = tuned.network.state_dict(), load_model().network.state_dict()
    statistics = [n for n in shipped_state if n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics
    for name in statistics:
        assert np.array_equal(tuned_state[name].numpy(), shipped_state[name].numpy()), name
    assert not np.allclose(tuned_state["stem.0.0.weight"].numpy(), shipped_state["stem.0.0.weight"].numpy())
    assert not np.allclose(tuned_state["stem.0.1.weight"].numpy(), shipped_state["stem.0.1.weight"].numpy())
    assert tuned.metadata["training"]["frozen_norm"] is True


def test_width_sets_the_network_s_channels_for_training_inference_and_resuming(tmp_path, tiny_dataset):
    """--width scales every block's channels (multiples of 8); the model file carries the architecture, so the
    pipeline's predictor runs it; a run resumes only at the width it started with; with --init it widens that
    model and never narrows it."""
    assert CPNConfig().widened(1.5).encoder == (48, 96, 144, 192)
    assert CPNConfig().widened(1.5).decoder == (144, 96, 48)

    def train_cli(output, *options, steps=2):
        return promptseg("train", "--data", f"{tiny_dataset}:nuclei", "--batch-size", "2", "--crop", "64",
                         "--workers", "0", "--steps", str(steps), "--device", "cpu", "-o", tmp_path / output, *options)

    run = train_cli("narrow", "--width", "0.5")
    assert run.returncode == 0, run.stderr
    model = load_model(tmp_path / "narrow" / "model.pt")
    assert model.network.config.encoder == (16, 32, 48, 64) and model.network.config.decoder == (48, 32, 16)
    label = tifffile.imread(next((tiny_dataset / "labels").iterdir()))
    pixels = np.repeat(((label > 0) * 200 + 20).astype(np.uint8)[:96, :96, None], 3, axis=2)
    detections = Predictor(model).predict_image(pixels, "nuclei", (0.0, 255.0))
    assert detections.contours.shape[1:] == (32, 2) and np.isfinite(detections.contours).all()
    resumed = train_cli("narrow")  # the default width against the checkpoint of width 0.5
    assert resumed.returncode == 2 and "another size" in resumed.stderr and "checkpoint.pt" in resumed.stderr

    widen_narrow = ("--init", tmp_path / "narrow" / "model.pt", "--width", "2")
    widened = train_cli("wide", *widen_narrow)
    assert widened.returncode == 0, widened.stderr
    assert load_model(tmp_path / "wide" / "model.pt").network.config.encoder == (32, 64, 96, 128)
    longer = train_cli("wide", *widen_narrow, steps=3)  # the widened run goes on from its checkpoint
    assert longer.returncode == 0 and "resumed" in longer.stderr, longer.stderr
    assert load_model(tmp_path / "wide" / "model.pt").metadata["trained_steps"] == 3
    narrowed = train_cli("ft", "--init", "default", "--width", "0.5")
    assert narrowed.returncode == 2 and "cannot widen" in narrowed.stderr
    assert not (tmp_path / "ft" / "model.pt").exists()


def test_a_widened_network_computes_what_the_trained_one_does_and_learns_in_its_new_channels():
    """Trained channels keep their weights and read nothing from the new ones, whose own weights are fresh: the
    same outputs before any step, in inference and in training mode, and a gradient on the weights that link them."""
    trained = load_model().network
    wide = widen(trained, trained.config.widened(1.5))
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in trained.parameters())
    image, prompts = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])
    pixels = (torch.tensor([0, 1]), torch.tensor([5, 30]), torch.tensor([7, 40]))
    for mode in ("eval", "train"):
        with torch.no_grad():
            before, after = getattr(trained, mode)()(image, prompts), getattr(wide, mode)()(image, prompts)
        for old, new in [(before.logits, after.logits), (before.refine, after.refine),
                         *zip(before.at(*pixels), after.at(*pixels))]:
            torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5)
    wide(image, prompts).logits.sum().backward()
    head = wide.head[1].weight.grad.flatten(1)  # the 1x1 output layer: trained inputs, then new ones
    assert head[:, trained.config.decoder[-1]:].abs().sum() > 0


def test_train_rejects_a_folder_that_is_not_a_dataset(tmp_path):
    run = promptseg("train", "--data", f"{tmp_path}:nuclei", "-o", tmp_path / "run")
    assert run.returncode == 2 and "not a dataset folder" in run.stderr


def test_evaluate_prints_metrics_and_saves_predictions(tmp_path, tiny_dataset):
    preds = tmp_path / "preds"
    run = promptseg("evaluate", tiny_dataset, "--prompt", "nuclei", "--save-predictions", preds, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("ap@0.5", "ap@0.9", "f1@0.5", "pq@0.5", "n_true", "n_pred"):
        assert key in result
    assert set(result["by_kind"]) == {"fluorescence", "color"} and result["images"] == 4
    for tif in sorted(preds.glob("*.tif")):
        pred = tifffile.imread(tif)
        image_shape = tifffile.imread(tiny_dataset / "labels" / tif.name).shape
        assert pred.dtype == np.uint32 and pred.shape == image_shape
    assert len(list(preds.glob("*.tif"))) == 4
    baseline = promptseg("evaluate", tiny_dataset, "--method", "otsu-watershed")
    assert json.loads(baseline.stdout)["method"] == "otsu-watershed"


def test_validation_split_is_fixed_and_stratified(data):
    held = validation_ids(data / "dsb2018")
    assert held == validation_ids(data / "dsb2018")
    with open(data / "dsb2018" / "index.csv") as handle:
        kinds = {r["id"]: r["kind"] for r in csv.DictReader(handle)}
    per_kind = {k: sum(1 for i in held if kinds[i] == k) for k in set(kinds.values())}
    assert per_kind["fluorescence"] >= 60 and per_kind["color"] >= 10 and per_kind["brightfield_gray"] >= 2


@pytest.mark.parametrize("dataset", ["cpm15", "tiny"])
def test_a_packed_dataset_trains_and_validates_on_what_the_original_gives(tmp_path, data, tiny_dataset, dataset):
    """cpm15: its 40x images are stored at the model's pixel size; tiny (dsb2018): its grey images in one channel."""
    source = tiny_dataset if dataset == "tiny" else data / dataset
    packed = tmp_path / "packed" / dataset
    written = pack_dataset(source, packed, native_mpp=0.35)
    assert written < sum(f.stat().st_size for f in source.rglob("*") if f.suffix in (".png", ".tif"))
    assert validation_ids(packed) == validation_ids(source)
    for split in ("train", "validation"):
        original, copy = load_samples(source, 0.35, split), load_samples(packed, 0.35, split)
        assert [s.id for s in copy] == [s.id for s in original] and original
        for a, b in zip(original, copy):
            assert (a.kind, a.intensity) == (b.kind, b.intensity)
            assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


def test_simulator_gives_nuclei_inside_cells():
    image, nuclei, cells = simulate_tissue(np.random.default_rng(3), 128)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    ids = np.unique(nuclei[nuclei > 0])
    assert len(ids) > 5
    for i in ids:
        assert (cells[nuclei == i] == i).all()
        assert (cells == i).sum() > (nuclei == i).sum()
    assert image[..., 2][nuclei > 0].mean() > image[..., 2][cells == 0].mean()


def test_resume_drops_loss_records_written_after_the_last_checkpoint(tmp_path):
    from promptseg_cli.training.train import _trim_log

    log = tmp_path / "losses.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)))
    _trim_log(log, 5)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_the_prompt_alone_switches_between_nuclei_and_whole_cells(tmp_path):
    from promptseg_cli.evaluation.evaluate import cpn_segmenter, evaluate
    from promptseg_cli.model.predictor import Predictor
    from promptseg_cli.training.simulate import write_simulated_dataset

    folders = write_simulated_dataset(tmp_path, count=4, seed=99)
    predictor = Predictor(load_model())
    score = {(p, t): evaluate(folders[t], cpn_segmenter(predictor, p))["ap@0.5"]
             for p in ("nuclei", "cells") for t in ("nuclei", "cells")}
    assert score["nuclei", "nuclei"] > 0.7 and score["cells", "cells"] > 0.7
    assert score["nuclei", "cells"] < 0.1 and score["cells", "nuclei"] < 0.1


def test_inference_network_folds_batchnorm_without_changing_outputs():
    import torch

    from promptseg_cli.model.network import fused_for_inference

    network = load_model().network.eval()
    fused = fused_for_inference(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is left as it was
    prompts = torch.tensor([0, 1])
    for shape, layout in (((2, 3, 96, 128), torch.contiguous_format), ((2, 3, 160, 48), torch.channels_last)):
        image = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=layout)
        with torch.inference_mode():
            a, b = _every_pixel(network(image, prompts)), _every_pixel(fused(image, prompts))
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4)
    with torch.inference_mode(), pytest.raises(ValueError, match="multiples of 16"):
        fused(torch.zeros(1, 3, 72, 64), prompts[:1])


def test_the_traced_inference_network_gives_the_same_outputs_to_the_bit():
    """The CPU predictor runs the network as a TorchScript graph (``TracedCPN``, recorded on a 64² tile of one
    prompt); every output is identical to the eager network's, whatever the tile size, batch and prompts."""
    import torch

    from promptseg_cli.model.network import TracedCPN, fused_for_inference
    from promptseg_cli.model.predictor import Predictor

    eager = fused_for_inference(load_model().network)
    traced = TracedCPN(eager)
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in ((1, 1216, 1216), (2, 160, 48), (3, 96, 272)):
        image = torch.randn(batch, 3, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
        prompts = torch.arange(batch) % 2
        with torch.inference_mode():
            a, b = eager(image, prompts), traced(image, prompts)
        for name in ("logits", "refine", "features", "shape_weight", "shape_bias"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (name, batch, height, width)
    assert traced.config == eager.config
    assert isinstance(Predictor(load_model()).network, TracedCPN)
    assert not isinstance(Predictor(load_model(), precision="bf16").network, TracedCPN)  # autocast runs eager


def test_decoder_convolution_at_half_size_equals_the_convolution_of_the_upsampled_concatenation():
    """The decoder's 3x3 convolution of (upsampled input, skip features) done as four phase convolutions of the
    half-size input: the same values and gradients as over the upsampled map, in either memory layout."""
    import torch
    from torch.nn import functional as F

    from promptseg_cli.model.network import upsampled_conv

    generator = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(6 + 4, 5, 3, padding=1)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 6, 7, 9, generator=generator).contiguous(memory_format=layout).requires_grad_()
        skip = torch.randn(2, 4, 14, 18, generator=generator).contiguous(memory_format=layout).requires_grad_()
        reference = conv(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], dim=1))
        expected = torch.autograd.grad(reference.square().sum(), (x, skip, conv.weight))
        result = upsampled_conv(x, skip, conv)
        torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-5)
        for got, want in zip(torch.autograd.grad(result.square().sum(), (x, skip, conv.weight)), expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_inference_path_gives_the_training_path_s_values_in_either_memory_layout():
    """At inference FiLM works in place; the outputs must be exactly those of the (autograd) training path, for
    NCHW and channels-last inputs alike."""
    import torch

    network = load_model().network.eval()
    image = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    prompts = torch.tensor([0, 1])
    for layout in (torch.contiguous_format, torch.channels_last):
        x = image.contiguous(memory_format=layout)
        with torch.enable_grad():
            reference = _every_pixel(network(x, prompts))
        with torch.inference_mode():
            fast = _every_pixel(network(x, prompts))
        for name in reference:
            assert torch.equal(fast[name], reference[name].detach()), (layout, name)


def _every_pixel(output) -> dict:
    """A network output's values at every head pixel: logits, refinement field, centre offsets and coefficients."""
    import torch

    b, _, h, w = output.logits.shape
    index = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
    offsets, coeffs = output.at(*(i.flatten() for i in index))
    return {"logits": output.logits, "refine": output.refine, "offsets": offsets, "coeffs": coeffs}


def test_offsets_and_coefficients_where_asked_are_the_head_s_scaled_outputs_there():
    """Offsets and Fourier coefficients are computed only at the pixels asked for: the values of the head's 1x1
    convolution at those pixels, scaled to input pixels, and gradients reach the head through them."""
    import torch

    network = load_model().network.eval()
    config = network.config
    output = network(torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 0]))
    dense = network.head[1](output.features)  # logit, offsets, coefficients, refinement field per pixel
    logits, offsets, coeffs, refine = torch.split(dense, [1, 2, 4 * config.order, 2], dim=1)
    torch.testing.assert_close(output.logits, logits)
    torch.testing.assert_close(output.refine, refine)
    batch, rows, cols = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 31]), torch.tensor([5, 23, 0])
    got_offsets, got_coeffs = output.at(batch, rows, cols)
    torch.testing.assert_close(got_offsets, offsets[batch, :, rows, cols] * config.offset_scale)
    torch.testing.assert_close(got_coeffs, coeffs[batch, :, rows, cols].unflatten(1, (4, config.order)) * config.coeff_scale)
    (got_offsets.sum() + got_coeffs.sum()).backward()
    assert network.head[1].weight.grad[1 : 3 + 4 * config.order].abs().sum() > 0


def test_network_input_is_the_normalised_tiles_zero_padded_in_channel_last_order():
    """Tiles become the network's input in place: the values of ``normalise_image`` (whole-image percentiles)
    exactly, zeros in the padding to the stride multiple, laid out channels-last (the layout the convolutions
    run fastest in on CPU)."""
    from promptseg_cli.model.network import STRIDE_MULTIPLE, normalise_image

    tiles = np.random.default_rng(4).integers(0, 256, (2, 37, 50, 3), dtype=np.uint8)
    tiles.flags.writeable = False  # as arrays from a dask worker's messages may be
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = Predictor(load_model()).network_input(tiles, (20.0, 230.0))
    assert x.shape == (2, 3, 48, 64) and x.shape[2] % STRIDE_MULTIPLE == 0 and x.shape[3] % STRIDE_MULTIPLE == 0
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = normalise_image(torch.tensor(tiles).permute(0, 3, 1, 2).float(), 20.0, 230.0)
    assert torch.equal(x[:, :, :37, :50], expected)
    assert not x[:, :, 37:].any() and not x[:, :, :, 50:].any()
