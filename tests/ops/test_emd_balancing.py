"""The solver's normalisation helpers: `centre_potentials` on hand-made cases."""

import numpy as np
import tensorflow as tf

from tf_deepemd.ops.emd.balancing import centre_potentials


def centre(u, v, source, target, balanced, dummy_row=0.0, dummy_col=0.0, dummy_cost=0.0):
    tensors = [tf.constant(np.atleast_2d(x), tf.float64) for x in (u, v, source, target)]
    scalars = [tf.constant([x], tf.float64) for x in (dummy_row, dummy_col, dummy_cost)]
    u, v = centre_potentials(
        *tensors, balanced=tf.constant([balanced]), dummy_row_potential=scalars[0],
        dummy_col_potential=scalars[1], dummy_cost=scalars[2],
    )
    return u.numpy()[0], v.numpy()[0]


def test_balanced_potentials_split_the_dual_value_evenly(rng):
    u, v = rng.normal(size=4), rng.normal(size=3)
    source = rng.uniform(0.5, 1.5, size=4)
    target = rng.uniform(0.5, 1.5, size=3)
    target *= source.sum() / target.sum()
    new_u, new_v = centre(u, v, source, target, balanced=True)
    # One constant moved from v to u: every u[i] + v[j] is unchanged ...
    np.testing.assert_allclose(new_u[:, None] + new_v[None, :], u[:, None] + v[None, :])
    np.testing.assert_allclose(new_u - u, np.full(4, (new_u - u)[0]))
    # ... and the two halves of the dual objective are equal.
    np.testing.assert_allclose(new_u @ source, new_v @ target)


def test_dummy_column_gets_the_dummy_cost():
    # More source mass: the dummy column takes the excess. Its potential 5
    # becomes the dummy cost 1, so t = 4 moves from v to u.
    new_u, new_v = centre([1.0, 2.0], [3.0], [1.0, 2.0], [1.5], balanced=False,
                          dummy_col=5.0, dummy_cost=1.0)
    np.testing.assert_allclose(new_u, [5.0, 6.0])
    np.testing.assert_allclose(new_v, [-1.0])


def test_dummy_row_gets_the_dummy_cost():
    # More target mass: the dummy row (potential -2) gets the dummy cost 0.5.
    new_u, new_v = centre([1.0], [3.0, 4.0], [1.0], [1.0, 2.0], balanced=False,
                          dummy_row=-2.0, dummy_cost=0.5)
    np.testing.assert_allclose(new_u, [3.5])
    np.testing.assert_allclose(new_v, [0.5, 1.5])


def test_no_mass_leaves_the_potentials_finite():
    new_u, new_v = centre([1.0, 2.0], [3.0], [0.0, 0.0], [0.0], balanced=True)
    np.testing.assert_allclose(new_u, [1.0, 2.0])
    np.testing.assert_allclose(new_v, [3.0])
