"""bench/separability.py: d' has its textbook value on planted distributions, and the
whitening power it compares spans the two ends it interpolates (known answers on synthetic
volumes)."""

import importlib.util
from pathlib import Path

import numpy as np

from data_tools import spectrum

_spec = importlib.util.spec_from_file_location(
    "separability", Path(__file__).resolve().parents[1] / "bench" / "separability.py")
separability = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(separability)


def test_dprime_of_two_shifted_gaussians_is_their_distance_in_sigmas():
    rng = np.random.default_rng(0)
    template = np.array([1.0, 0.0, 0.0])
    a = rng.normal(0.0, 1.0, (20000, 3)) + np.array([2.5, 9.0, -4.0])
    b = rng.normal(0.0, 1.0, (20000, 3))
    assert abs(separability.dprime(a, b, template) - 2.5) < 0.05
    # the template reads only the first radius: the other two shifts are invisible to it
    assert abs(separability.dprime(a, b, np.array([0.0, 0.0, 1.0])) + 4.0) < 0.05


def test_template_separates_the_classes_it_was_taken_from():
    rng = np.random.default_rng(1)
    shape = rng.normal(0.0, 1.0, 6)
    prof = {"a": rng.normal(0.0, 0.3, (500, 6)) + shape,
            "b": rng.normal(0.0, 0.3, (500, 6)) - shape}
    t = separability.template(prof, "a", "b")
    assert separability.dprime(prof["a"], prof["b"], t) > 5.0
    assert separability.dprime(prof["b"], prof["a"], t) < -5.0


def test_partial_whitening_spans_full_whitening_and_the_reference_low_pass():
    rng = np.random.default_rng(2)
    vol = rng.normal(0.0, 1.0, (24, 32, 32)).astype(np.float32)
    full = spectrum.whiten(vol, 1.0)
    # power 1 undoes the input's scale; power 0 is a fixed filter, linear in the input
    np.testing.assert_allclose(spectrum.whiten(3 * vol, 1.0), full, atol=1e-4)
    low = spectrum.whiten(vol, 1.0, power=0.0)
    np.testing.assert_allclose(spectrum.whiten(3 * vol, 1.0, power=0.0), 3 * low,
                               rtol=1e-4, atol=1e-4)
    assert low.std() < vol.std()  # the reference is a low-pass
