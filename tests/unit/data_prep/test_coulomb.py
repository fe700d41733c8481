"""Coulomb matrices (bohr) and their randomised variant, on real QM9 molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from data_prep import (
    DataError,
    coulomb_matrices,
    coulomb_matrix,
    load_qm9pack,
    randomize_coulomb,
    sort_coulomb,
)

BOHR = 0.529177210903  # Angstrom
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def geoms():
    return load_qm9pack()


@pytest.fixture(scope="module")
def batch(geoms):
    """Sorted Coulomb matrices of 300 real molecules (small and large ones)."""
    rows = np.r_[0:50, 60000:60150, 130731:130831]
    g = geoms.take(rows)
    return g, sort_coulomb(coulomb_matrices(g.Z, g.R))


def by_hand(Z, R_angstrom):
    n = len(Z)
    C = np.zeros((29, 29))
    R = np.asarray(R_angstrom, float) / BOHR
    for i in range(n):
        for j in range(n):
            if i == j:
                C[i, j] = 0.5 * Z[i] ** 2.4
            else:
                C[i, j] = Z[i] * Z[j] / np.linalg.norm(R[i] - R[j])
    return C


@pytest.mark.parametrize("qm9_index", [1, 3])  # methane, water
def test_coulomb_matrix_by_hand_in_bohr(geoms, qm9_index):
    row = qm9_index - 1
    n = int(geoms.n_atoms[row])
    Z, R = geoms.Z[row, :n].astype(int), geoms.R[row, :n]
    C = coulomb_matrix(Z, R)
    assert C.shape == (29, 29) and C.dtype == np.float32
    np.testing.assert_allclose(C, by_hand(Z, R), rtol=1e-6)
    assert np.all(C[n:] == 0) and np.all(C[:, n:] == 0)


def test_water_numbers():
    # O at the origin, H at 0.9572 Angstrom along x: C_OH = 8 / (0.9572 / 0.529177...)
    C = coulomb_matrix([8, 1], [[0, 0, 0], [0.9572, 0, 0]])
    assert C[0, 0] == pytest.approx(0.5 * 8**2.4) and C[1, 1] == pytest.approx(0.5)
    assert C[0, 1] == pytest.approx(8 * 0.529177210903 / 0.9572, rel=1e-6) == C[1, 0]


def test_batch_equals_one_by_one(batch, geoms):
    g, _ = batch
    C = coulomb_matrices(g.Z, g.R, chunk=64)  # several chunks
    for i in (0, 77, 299):
        n = int(g.n_atoms[i])
        np.testing.assert_allclose(C[i], coulomb_matrix(g.Z[i, :n], g.R[i, :n]), rtol=1e-6)


def test_bad_molecules_are_refused():
    with pytest.raises(DataError, match="30 atoms, more than the 29"):
        coulomb_matrix(np.ones(30, int), np.arange(90.0).reshape(30, 3))
    with pytest.raises(DataError, match="same position"):
        coulomb_matrix([6, 1], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(DataError, match=r"expected \(3, 3\)"):
        coulomb_matrix([6, 1, 1], [[0, 0, 0], [1, 0, 0]])


def recover_permutation(C: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The permutation p with out[i] a permuted copy of C[p[i]] (matching sorted rows)."""
    a, b = np.sort(out, axis=1), np.sort(C, axis=1)
    cost = np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def test_randomised_is_a_consistent_permutation_of_rows_and_columns(batch):
    g, C = batch
    out = randomize_coulomb(C, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, np.ndarray) and out.shape == C.shape and out.dtype == C.dtype
    moved = 0
    for i in range(0, len(C), 10):
        p = recover_permutation(C[i], out[i])
        P = np.eye(29)[p]
        np.testing.assert_array_equal(out[i], C[i][p][:, p])  # rows AND columns
        np.testing.assert_allclose(out[i], P @ C[i] @ P.T, atol=0)
        np.testing.assert_array_equal(out[i], out[i].T)
        np.testing.assert_allclose(np.linalg.eigvalsh(out[i]), np.linalg.eigvalsh(C[i]),
                                   rtol=1e-5, atol=1e-3)
        n = int(g.n_atoms[i])
        assert np.all(out[i, n:] == 0) and np.all(out[i, :, n:] == 0)  # padding at the end
        assert np.all(np.diagonal(out[i])[:n] > 0)
        moved += not np.array_equal(p, np.arange(29))
    assert moved > 10  # noise 1 reorders most real molecules


def test_noise_zero_is_the_sorted_order(batch):
    g, C = batch
    raw = coulomb_matrices(g.Z, g.R)
    s = sort_coulomb(raw)
    np.testing.assert_array_equal(randomize_coulomb(raw, noise=0.0), s)
    np.testing.assert_array_equal(s, C)
    norms = np.linalg.norm(s.astype(np.float64), axis=2)
    assert np.all(np.diff(norms, axis=1) <= 1e-12 * norms[:, :1])  # descending row norms


def test_sorting_is_idempotent(batch):
    # Symmetric atoms tie in row norm although their rows differ (by up to ~15 in QM9): the
    # order must not hang on the rounding of the norm, or a re-sort would change the matrix.
    _, C = batch
    np.testing.assert_array_equal(sort_coulomb(C), C)
    assert torch.equal(sort_coulomb(torch.from_numpy(C)), torch.from_numpy(C))


def test_draws_differ_and_seeds_repeat(batch):
    _, C = batch
    a = randomize_coulomb(C, generator=torch.Generator().manual_seed(1))
    b = randomize_coulomb(C, generator=torch.Generator().manual_seed(2))
    c = randomize_coulomb(C, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, c)
    differ = np.any(a != b, axis=(1, 2))
    assert differ.mean() > 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_torch_tensors_stay_on_their_device(batch, device):
    _, C = batch
    t = torch.from_numpy(C).to(device)
    gen = torch.Generator(device=device).manual_seed(3)
    out = randomize_coulomb(t, generator=gen)
    assert isinstance(out, torch.Tensor) and out.device == t.device and out.dtype == t.dtype
    assert torch.equal(out, out.transpose(1, 2))
    # Same values per matrix (a permutation): sorted entries agree.
    torch.testing.assert_close(out.flatten(1).sort(dim=1).values, t.flatten(1).sort(dim=1).values)
    assert torch.equal(randomize_coulomb(t, noise=0.0), t)  # already sorted
    # A leading batch shape of more than one dimension works too.
    assert randomize_coulomb(t[:20].reshape(4, 5, 29, 29)).shape == (4, 5, 29, 29)
