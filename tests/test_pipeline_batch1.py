"""Batch 1 as one ONNX Runtime call: the same answers as the three stages, bit for bit, and the stages where needed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from msvit_edge.engines.ort import OnnxRuntimePipeline, batch1_graph, session
from msvit_edge.engines.pipeline import StageTimes


@pytest.fixture(scope="module")
def images(bundle) -> np.ndarray:
    return bundle.preprocess(bundle.reference().images[:24])


def test_one_call_gives_the_stages_answers_bit_for_bit(bundle, images):
    with OnnxRuntimePipeline(bundle) as one, OnnxRuntimePipeline(bundle, one_call=False) as staged:
        assert one.one_call and not staged.one_call and "batch1" not in staged.sessions
        for i in range(len(images)):
            got, want = one(images[i : i + 1], bundle.threshold), staged(images[i : i + 1], bundle.threshold)
            for key in ("logits", "counts", "probs"):
                np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
            assert [(c.index.tolist(), c.rows, c.bucket) for c in got.calls] == [
                (c.index.tolist(), c.rows, c.bucket) for c in want.calls
            ]
    assert len(set(bundle.reference().counts[:24].tolist())) > 3  # several counts, so several encoder shapes


@pytest.mark.parametrize("threshold, count", [(0.0, 65), (1.0, 17)])
def test_one_call_at_thresholds_0_and_1_is_all_fine_and_all_coarse(bundle, images, threshold, count):
    with OnnxRuntimePipeline(bundle) as pipe:
        out = pipe(images[:1], threshold)
        vit = pipe.plain_vit()(images[:1])
    assert out.counts.tolist() == [count] and out.calls[0].rows == count
    if threshold == 0.0:  # every region fine: the plain ViT's token sequence
        np.testing.assert_allclose(out.logits, vit, rtol=0, atol=1e-5)


def test_the_composed_graph_gathers_only_the_selected_rows_and_holds_no_weights(bundle):
    composed = batch1_graph(bundle.graph("tokenizer"), bundle.graph("encoder"))
    model = onnx.load_from_string(composed.graph)
    ops = [n.op_type for n in model.graph.node]
    assert [i.name for i in model.graph.input] == ["images", "threshold"]
    assert [o.name for o in model.graph.output] == ["logits", "counts", "probs"]
    assert "GatherElements" not in ops and ops.count("TopK") == 1  # every candidate is no longer gathered
    placeholders = {t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert placeholders == set(composed.weights) and any(name.startswith("encoder/") for name in placeholders)
    read = {name for n in model.graph.node for name in n.input}
    assert {t.name for t in model.graph.initializer} <= read  # the dropped nodes' constants went with them


def test_a_tokenizer_without_the_final_gather_has_its_tokens_sliced(bundle, images, tmp_path):
    tokenizer = onnx.load(str(bundle.graph("tokenizer")))
    last = next(n for n in tokenizer.graph.node if "tokens" in n.output)
    last.output[0] = "gathered"  # another tokenizer: its tokens come out of some other op
    tokenizer.graph.node.append(onnx.helper.make_node("Identity", ["gathered"], ["tokens"]))
    onnx.save(tokenizer, tmp_path / "tokenizer.onnx")
    composed = batch1_graph(tmp_path / "tokenizer.onnx", bundle.graph("encoder"))
    assert "Slice" in [n.op_type for n in onnx.load_from_string(composed.graph).graph.node if "tokens" in n.input]
    run = session(composed.graph, weights=composed.weights).run
    with OnnxRuntimePipeline(bundle, one_call=False) as staged:
        for i in range(6):
            logits, counts, _ = run(
                None, {"images": images[i : i + 1], "threshold": np.asarray(bundle.threshold, np.float32)}
            )
            want = staged(images[i : i + 1], bundle.threshold)
            np.testing.assert_array_equal(counts, want.counts)
            np.testing.assert_array_equal(logits, want.logits)


def test_stages_run_for_a_batch_and_for_bucket_padding(bundle, images):
    with OnnxRuntimePipeline(bundle) as pipe:
        pipe.timer = StageTimes()
        pipe(images[:1], bundle.threshold)
        assert set(pipe.timer.seconds) == {"one call"}
        pipe.timer = StageTimes()
        pipe(images[:4], bundle.threshold)
        assert set(pipe.timer.seconds) == {"tokenizer", "selection", "encoder"}
        pipe.pad_to_bucket, pipe.timer = True, StageTimes()
        out = pipe(images[:1], bundle.threshold)
    assert set(pipe.timer.seconds) == {"tokenizer", "selection", "encoder"}
    assert out.calls[0].rows == bundle.plan.buckets[out.calls[0].bucket].max
