"""The parity assertion of the official-model tests, which also prints the measured difference
(``pytest -s tests/official`` shows every figure)."""

import numpy as np

TOLERANCE = 1e-4


def assert_parity(case, got, expected, same_argmax=False):
    """``got`` within `TOLERANCE` of ``expected`` everywhere (and the same row-wise argmax)."""
    difference = float(np.max(np.abs(np.asarray(got, np.float64) - expected)))
    print(f"\nparity {case}: max |difference| {difference:.1e} "
          f"(|values| up to {np.max(np.abs(expected)):.3g})")
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE, err_msg=case)
    if same_argmax:
        np.testing.assert_array_equal(np.argmax(got, 1), np.argmax(expected, 1), err_msg=case)
