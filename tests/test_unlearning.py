"""Attribution by unlearning (`unlearn`, AbU): its small-step limit is the Fisher influence function
it approximates, and unlearning planted canaries' pattern ranks the canaries first."""

import numpy as np
import pytest
import torch

from influence_lab.attribution.example_gradients import per_example_gradients
from influence_lab.attribution.methods import Targets
from influence_lab.data.canaries import canary_pattern
from influence_lab.training.batches import batch_of, outputs_batch
from tests.conftest import prepared_method


@pytest.fixture
def trained(canary_vae):
    return canary_vae


def test_a_small_step_is_the_fisher_influence_function(trained):
    """One step of lr -> 0 scores item i by lr grad l_i^T (N F + delta)^-1 grad L(x): the rise of
    each training item's loss equals that product (computed here from every per-example gradient)
    to within the step's second-order term."""
    _, bundle = trained
    lr = 1e-5
    method = prepared_method(trained, "unlearn", {"unlearn": {"lr": lr, "noise_draws": 1}})
    picks = [3, 117, 250]
    outs = [np.asarray(bundle.train[i]["image"], dtype=np.float32)[None] for i in picks]
    prompts = [bundle.train[i]["caption"] for i in picks]
    scores = method.scores(Targets(prompts, outs)).values
    grads = torch.cat(list(per_example_gradients(method.model, batch_of(bundle.train)))).double()
    n_fisher = (grads**2).sum(0)  # N F, with the same noise as the method's
    sizes = [p.numel() for p in method.params]
    inverse = torch.cat(
        [1 / (part + 0.1 * part.mean()) for part in torch.split(n_fisher, sizes)]
    )  # the default fisher_damping 0.1, per parameter tensor
    for k, (prompt, out) in enumerate(zip(prompts, outs, strict=True)):
        target = method.target_gradient(outputs_batch(out, [prompt])).double()
        expected = lr * (grads @ (inverse * target)).numpy()
        error = np.linalg.norm(scores[k] - expected) / np.linalg.norm(expected)
        assert error < 0.1, (k, error)
        assert np.corrcoef(scores[k], expected)[0, 1] > 0.995


def test_unlearning_the_canary_pattern_ranks_the_canaries_first(trained):
    """The target is the canaries' pattern itself under their caption: its 6 planted copies are the
    method's top 6 of 276 items, and the model's weights are restored after scoring."""
    _, bundle = trained
    method = prepared_method(trained, "unlearn")
    before = method.theta.clone()
    pattern = canary_pattern((1, 8, 8), 0)[None].astype(np.float32)
    scores = method.scores(Targets(["zxq pattern"], [pattern])).values[0]
    top = np.argsort(-scores)[:6]
    ids = np.asarray(bundle.train["id"])
    assert sorted(ids[top]) == [f"canary-{i:03d}" for i in range(6)]
    assert torch.equal(torch.nn.utils.parameters_to_vector(method.params), before)
    again = method.scores(Targets(["zxq pattern"], [pattern])).values[0]
    np.testing.assert_allclose(again, scores, rtol=1e-6, atol=1e-9)  # the same weights again
