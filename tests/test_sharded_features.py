"""Sharded features (attribution.gradient.shard_size): each shard its own claimed result, equal
bit for bit to the features computed in one piece; a featurisation killed midway recomputes only
its missing shards and ends equal to an uninterrupted run; TRAK's kernel and scores streamed over
the shards equal the in-memory ones; float16 storage moves the scores by a stated amount."""

import threading
import time

import numpy as np
import pytest

from influence_lab.attribution import feature_store
from influence_lab.attribution.feature_store import Features, train_features
from influence_lab.attribution.spectrum import Spectrum
from influence_lab.data import load_data
from influence_lab.errors import InfluenceLabError
from influence_lab.models.build import build_model
from influence_lab.settings.attribution import GradientSettings
from influence_lab.training.batches import batch_of
from tests.conftest import typed


@pytest.fixture
def digits(cfg_factory):
    cfg = cfg_factory("train", "data.source.max_items=300")
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0).eval()
    return model, batch_of(bundle.train), bundle.fingerprint


def _features(root, model, rows, fp, **kw):
    return train_features(root, model, "m", rows, fp, "measured", 128, 0, **kw)


def test_shards_equal_the_whole_bitwise(digits, tmp_path, capsys):
    model, rows, fp = digits
    whole = _features(tmp_path / "a", model, rows, fp)
    sharded = _features(tmp_path / "b", model, rows, fp, shard_size=64)
    n = len(rows["caption"])
    assert len(sharded.shards) == -(-n // 64) and sharded.shape == whole.shape == (n, 128)
    assert all(isinstance(s, np.memmap) for s in sharded.shards)  # read back memory-mapped
    assert np.array_equal(np.asarray(sharded), np.asarray(whole))
    assert len(list((tmp_path / "b" / "features").glob("measured-shard-*/done"))) == len(
        sharded.shards
    )
    err = " ".join(capsys.readouterr().err.split())
    assert f"shard {len(sharded.shards)}/{len(sharded.shards)}, {n:,}/{n:,} items" in err


def test_a_killed_featurisation_resumes_its_missing_shards(digits, tmp_path, monkeypatch):
    model, rows, fp = digits
    calls = []
    real = feature_store.projected_gradients

    def dies_on_the_third_shard(*args, **kwargs):
        calls.append(len(args[1]["caption"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed while featurising shard 3
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_store, "projected_gradients", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        _features(tmp_path, model, rows, fp, shard_size=64)
    done = list((tmp_path / "features").glob("measured-shard-*/done"))
    assert len(done) == 2
    calls.clear()
    monkeypatch.setattr(feature_store, "projected_gradients", real)
    counted = []
    monkeypatch.setattr(
        feature_store,
        "projected_gradients",
        lambda *a, **k: counted.append(1) or real(*a, **k),
    )
    resumed = _features(tmp_path, model, rows, fp, shard_size=64)
    assert len(counted) == len(resumed.shards) - 2  # only the unfinished shards
    uninterrupted = _features(tmp_path / "u", model, rows, fp, shard_size=64)
    assert np.array_equal(np.asarray(resumed), np.asarray(uninterrupted))


def test_streamed_kernel_and_scores_equal_the_in_memory_ones():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(1000, 40)).astype(np.float32)
    q = rng.normal(size=(7, 40))
    dense = Spectrum(phi)
    streamed = Spectrum(Features([phi[:300], phi[300:640], phi[640:]]))
    assert streamed.streamed and not dense.streamed
    for damping in (1e-3, 1.0):
        a, b = dense.scores(q, damping), streamed.scores(q, damping)
        assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max()
    # by hand: (Phi^T Phi + l I)^-1 Phi^T, l relative to the mean diagonal
    p64 = phi.astype(np.float64)
    gram = p64.T @ p64
    lam = 1.0 * np.trace(gram) / 40
    by_hand = q @ np.linalg.solve(gram + lam * np.eye(40), p64.T)
    np.testing.assert_allclose(streamed.scores(q, 1.0), by_hand, rtol=1e-8, atol=1e-10)


def test_float16_storage_moves_scores_little(digits, tmp_path):
    model, rows, fp = digits
    f32 = _features(tmp_path, model, rows, fp, shard_size=128)
    f16 = _features(tmp_path, model, rows, fp, shard_size=128, dtype="float16")
    assert f16.shards[0].dtype == np.float16
    q = np.asarray(f32)[:10]
    a, b = Spectrum(f32).scores(q, 1.0), Spectrum(f16).scores(q, 1.0)
    rel = np.abs(a - b).max() / np.abs(a).max()
    assert 0 < rel < 1e-2, rel
    top_a, top_b = np.argsort(-a, 1)[:, :10], np.argsort(-b, 1)[:, :10]
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)])
    assert overlap >= 0.9, overlap


def test_shard_size_is_a_multiple_of_the_gradient_chunk():
    with pytest.raises(Exception, match="shard_size is 100; it must be a multiple of 64"):
        GradientSettings(shard_size=100)
    assert GradientSettings(shard_size=128).shard_size == 128
    assert InfluenceLabError  # the stage reports the same sentence (tests/test_bad_input.py)


def test_top_scores_stream_equals_the_full_matrix():
    from influence_lab.attribution.topk import top_scores

    rng = np.random.default_rng(1)
    phi = rng.normal(size=(20_000, 16)).astype(np.float32)
    left = rng.normal(size=(300, 16))
    feats = Features([phi[:5000], phi[5000:12_345], phi[12_345:]])
    top = top_scores(left, feats, k=25, dtype=np.float64, target_block=128)
    full = left @ phi.astype(np.float64).T
    expect = np.argsort(-full, axis=1, kind="stable")[:, :25]
    assert np.array_equal(top.indices, expect)
    np.testing.assert_allclose(top.values, np.take_along_axis(full, expect, 1), rtol=1e-12)
    np.testing.assert_allclose(top.sums, full.sum(1), rtol=1e-9)
    assert top_scores(left[:2], Features([phi[:7]]), k=25).indices.shape == (2, 7)


def test_a_merge_keeps_the_top_k_by_either_path():
    """The running top-k merged with a block: by a sort of the few scores that enter, or by an
    argpartition of every candidate when many do; both equal the top-k of all scores seen."""
    from influence_lab.attribution.topk import merge

    rng = np.random.default_rng(3)
    k = 10
    best_v, best_i = np.full((6, k), -np.inf), np.zeros((6, k), np.int64)
    blocks = [rng.normal(size=(6, 500)), rng.normal(size=(6, 400)), rng.normal(size=(6, 300)) + 3]
    # entering each block: all 3,000 (argpartition), then few (sort), then most (argpartition)
    seen = np.zeros((6, 0))
    for block in blocks:
        enter = int((block > best_v.min(1)[:, None]).sum())
        assert (enter > 2 * best_v.size) == (block is not blocks[1]), enter
        best_v, best_i = merge(best_v, best_i, block, seen.shape[1])
        seen = np.concatenate([seen, block], 1)
        np.testing.assert_array_equal(np.sort(best_v, 1), np.sort(seen, 1)[:, -k:])
        np.testing.assert_array_equal(np.take_along_axis(seen, best_i, 1), best_v)


def test_read_ahead_passes_every_block_and_the_producers_error():
    from influence_lab.attribution.topk import ahead

    assert list(ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(ahead(broken()))
    # a consumer that stops early leaves no producer behind, at the end or before it
    before = threading.active_count()
    for source in (iter(range(3)), iter(range(100))):
        steps = ahead(source, depth=2)
        next(steps)
        time.sleep(0.3)  # the producer has filled the queue
        steps.close()
        assert threading.active_count() == before


def test_a_shard_another_process_computes_is_left_to_it(digits, tmp_path, monkeypatch):
    """Concurrent runs of one command split the shards: a shard whose claim another process
    holds is skipped, the others computed, and it is read (or computed, if that process died)
    at the end. Here a thread holds shard 1's lock until the run has done every other shard."""
    import threading

    from filelock import FileLock

    model, rows, fp = digits
    order = []
    real = feature_store.projected_gradients

    def recording(model_, batch, *args, part_of=None, **kwargs):
        if part_of is not None:
            order.append(part_of[0] // 64)
        return real(model_, batch, *args, part_of=part_of, **kwargs)

    monkeypatch.setattr(feature_store, "projected_gradients", recording)
    spec = {"model": "m", "data": fp, "output": "measured", "proj_dim": 128, "proj_seed": 0,
            "noise_seed": 0}  # fmt: skip
    lock = FileLock(str(feature_store._shard_run(tmp_path, spec, 1, 64, "float32").lock_path()))
    held, release = threading.Event(), threading.Event()

    def other_process():
        with lock:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=other_process)
    thread.start()
    held.wait(10)
    threading.Thread(target=lambda: (_wait_for(lambda: len(order) == 4), release.set())).start()
    feats = _features(tmp_path, model, rows, fp, shard_size=64)
    thread.join()
    assert order == [0, 2, 3, 4, 1]  # shard 1 last: it "died" holding nothing done
    whole = _features(tmp_path / "w", model, rows, fp)
    assert np.array_equal(np.asarray(feats), np.asarray(whole))


def _wait_for(condition, timeout=120.0):
    import time

    end = time.time() + timeout
    while not condition() and time.time() < end:
        time.sleep(0.05)


def test_features_that_cannot_fit_are_refused_before_any_gradient(cfg_factory, capsys, monkeypatch):
    from influence_lab.stages import attribute as attribute_stage
    from tests.conftest import stage_error

    monkeypatch.setattr(feature_store, "available_bytes", lambda: 10_000_000)  # 10 MB free
    with pytest.raises(InfluenceLabError, match="shard_size=8192"):
        feature_store.check_fits("trak", 60_000, 4096, 4, None)
    feature_store.check_fits("trak", 60_000, 4096, 4, 8192)  # sharded: read from disk
    monkeypatch.setattr(
        feature_store,
        "projected_gradients",
        lambda *a, **k: pytest.fail("a gradient was computed before the refusal"),
    )
    cfg = cfg_factory("attribute", "attribution.methods=[tracin]", "generate.m=2")
    err = stage_error(attribute_stage, cfg, capsys)
    assert "tracin would hold about" in err and "GB are available" in err
    assert "+attribution.gradient.shard_size=8192" in err


def test_sharded_trak_keeps_the_same_top_rows_without_the_full_table(cfg_factory, monkeypatch):
    """TRAK and TracIn over sharded features hand the attribute stage each target's top `keep` items
    (streamed, attribution/topk.py) instead of every item's score: the same items, in the same
    order, with the same scores as the in-memory table's top rows (TRAK: both ensemble models;
    TracIn: every snapshot)."""
    from influence_lab.attribution.methods import Targets, registry
    from influence_lab.attribution.preparation import context_for, prepared
    from influence_lab.stages.train import train

    def ranked(*overrides):
        cfg = cfg_factory(
            "attribute", "data.source.max_items=300", "attribution.gradient.proj_dim=64",
            "attribution.gradient.ensemble=2", "attribution.keep=15", *overrides,
        )  # fmt: skip
        from influence_lab.settings import from_config

        settings = from_config(cfg)
        bundle = load_data(settings.data)
        run = train(settings, bundle)
        context = context_for(settings, bundle, str(run.path), run.signature)
        named = registry.methods_named(["trak", "tracin"], settings.attribution)
        methods = prepared(named, context)
        rng = np.random.default_rng(0)
        images = rng.random((6, 1, 8, 8)).astype(np.float32)
        grouped = Targets(["digit zero", "digit one"], [images[:3], images[3:]])
        joint = Targets(["digit zero"] * 6, [images[i : i + 1] for i in range(6)], joint=True)
        tables = [m.scores(t) for m in methods.values() for t in (grouped, joint)]
        return methods["trak"], tables

    dense, dense_tables = ranked()
    streamed, streamed_tables = ranked("+attribution.gradient.shard_size=64")
    assert all(s.streamed for s in streamed.spectra) and not any(s.streamed for s in dense.spectra)
    for full, top in zip(dense_tables, streamed_tables, strict=True):
        assert full.candidates is None and top.candidates is not None
        n = 270
        for t in range(len(top.values)):
            items, scores = full.ranked(t, n)
            order = np.argsort(-scores, kind="stable")[:15]
            cand, values = top.ranked(t, n)
            assert len(cand) == 15
            assert np.array_equal(cand, items[order])
            np.testing.assert_allclose(values, scores[order], rtol=1e-9)


def test_progress_rates_count_only_the_shards_computed(capsys):
    progress = feature_store.ShardProgress("measured", 3, 300, 128)
    progress.done(0, 0.1, computed=False)  # found done: no rate
    progress.done(1, 2.0, computed=True)  # 128 items in 2 s
    progress.done(2, 0.3, computed=False)
    lines = [" ".join(ln.split()) for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines == [
        "features (measured): shard 1/3, 128/300 items (found done)",
        "features (measured): shard 2/3, 256/300 items, 64 items/s",
        "features (measured): shard 3/3, 300/300 items, 64 items/s",
    ]
