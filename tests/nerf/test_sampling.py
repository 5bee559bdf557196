from __future__ import annotations

import numpy as np
import torch

from mapforge.nerf.sampling import sample_pdf, stratified_samples


def test_stratified_samples_cover_bins():
    near, far = torch.tensor([2.0, 0.5]), torch.tensor([6.0, 1.5])
    even = stratified_samples(near, far, 64, perturb=False)
    torch.testing.assert_close(even[:, 0], near)
    torch.testing.assert_close(even[:, -1], far)
    t = stratified_samples(near, far, 64, perturb=True)
    assert t.shape == (2, 64)
    assert (t >= near[:, None]).all() and (t <= far[:, None]).all()
    assert (t[:, 1:] >= t[:, :-1]).all()
    # each sample lies in its own bin between midpoints of the even samples
    mids = 0.5 * (even[:, 1:] + even[:, :-1])
    assert (t[:, 1:] >= mids).all() and (t[:, :-1] <= mids).all()


def _cdf(x: np.ndarray, edges: np.ndarray, pdf_mass: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0.0], np.cumsum(pdf_mass)])
    return np.interp(x, edges, cum)


def test_sample_pdf_follows_piecewise_constant_pdf():
    edges = np.array([0.0, 1.0, 1.5, 3.0, 3.2, 5.0])
    weights = np.array([0.1, 2.0, 0.0, 5.0, 1.0])
    mass = (weights + 1e-5) / (weights + 1e-5).sum()
    n = 20000
    samples = sample_pdf(torch.tensor(edges)[None], torch.tensor(weights)[None], n)[0].numpy()
    assert (np.diff(samples) >= 0).all()
    assert samples.min() >= 0.0 and samples.max() <= 5.0
    empirical = np.arange(1, n + 1) / n
    ks = np.abs(empirical - _cdf(samples, edges, mass)).max()
    assert ks < 1.63 / np.sqrt(n)  # Kolmogorov-Smirnov at the 1 % level
    # the empty bin receives (almost) nothing
    assert ((samples > 1.5) & (samples < 3.0)).mean() < 1e-3


def test_sample_pdf_deterministic_quantiles():
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    weights = torch.tensor([[1.0, 3.0]])
    t = sample_pdf(edges, weights, 5, deterministic=True)[0]
    # CDF: 0.25 at t = 1; quantile 0.5 sits at 1 + (0.25 / 0.75)
    torch.testing.assert_close(t[[0, 2, 4]], torch.tensor([0.0, 1.0 + 1 / 3, 2.0]), atol=1e-4, rtol=0)


def test_sample_pdf_zero_weights_is_uniform():
    edges = torch.linspace(0, 1, 11)[None]
    t = sample_pdf(edges, torch.zeros(1, 10), 4001, deterministic=True)[0]
    torch.testing.assert_close(t, torch.linspace(0, 1, 4001), atol=1e-4, rtol=0)
