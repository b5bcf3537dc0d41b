"""The CUDA frontends' FFT (csrc/include/asdx/fft.h), compiled for the host, against numpy.fft.

The CPU frontends use pocketfft; the GPU runs asdx's own radix-2 FFT. asdx._C.testing runs that
FFT's code (the butterfly stages, the bit-reversed load, the twiddle tables packed as the kernels
read them, the two-real-frame unpacking) on the CPU, so a CPU-only test suite checks it.

Tolerance: Higham, "Accuracy and Stability of Numerical Algorithms" (2nd ed., Theorem 24.2) bounds
a radix-2 FFT's relative 2-norm error by log2(n) * eta / (1 - log2(n) * eta), eta = mu + gamma_4 (sqrt 2
+ mu), with mu the twiddles' relative error: eta ~ 7 eps for twiddles rounded to the working precision.
We allow 8 log2(n) eps, plus numpy's own float64 error (same bound in float64's eps).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx._native import _C

FFT_SIZES = [512, 1024]  # kaldi_fbank: 400-sample frames padded to 512; logmel_dcase and stereo: n_fft 1024
PRECISIONS = [False, True]  # float32=False: the default double FFT; True: the opt-in float FFT


def eps(float32: bool) -> float:
    return float(np.finfo(np.float32 if float32 else np.float64).eps)


def bound(n: int, float32: bool) -> float:
    """Relative 2-norm error allowed for one length-n transform (module docstring)."""
    return 8 * math.log2(n) * (eps(float32) + eps(False))


def cuda_fft(x: np.ndarray, float32: bool) -> np.ndarray:
    re, im = _C.testing.fft_forward(np.ascontiguousarray(x.real, dtype=np.float64),
                                    np.ascontiguousarray(x.imag, dtype=np.float64), float32)
    return re + 1j * im


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def as_working_precision(x: np.ndarray, float32: bool) -> np.ndarray:
    """The input the kernel really transforms (the kernels load float32 samples into Real)."""
    return x.astype(np.complex64).astype(np.complex128) if float32 else x


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), scale_exponent=st.integers(-30, 30),
       float32=st.booleans())
def test_matches_numpy_on_random_complex_input(bits, seed, scale_exponent, float32):
    n = 2**bits
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 10.0**scale_exponent
    x = as_working_precision(x, float32)
    assert relative_error(cuda_fft(x, float32), np.fft.fft(x)) <= bound(n, float32)


@pytest.mark.parametrize("float32", PRECISIONS)
@pytest.mark.parametrize("n", FFT_SIZES + [4, 65536])  # the frontends' sizes and the binding's limits
def test_matches_numpy_at_the_frontend_sizes(n, float32):
    rng = np.random.default_rng(n)
    for x in (rng.standard_normal(n) + 1j * rng.standard_normal(n),  # white noise
              rng.standard_normal(n) * np.geomspace(1e-6, 1e6, n)):  # 240 dB ramp in amplitude, real only
        x = as_working_precision(x, float32)
        assert relative_error(cuda_fft(x, float32), np.fft.fft(x)) <= bound(n, float32)


@pytest.mark.parametrize("float32", PRECISIONS)
@pytest.mark.parametrize("n", FFT_SIZES)
def test_adversarial_inputs_give_their_exact_transforms(n, float32):
    k = np.arange(n)
    tol = bound(n, float32)
    # zeros stay exact zeros (no NaN from a twiddle or a scratch value)
    assert np.array_equal(cuda_fft(np.zeros(n, complex), float32), np.zeros(n))
    # an impulse at p: a pure phase ramp of modulus 1 in every bin (k p reduced mod n: exp of a
    # large argument would put float64 rounding into the reference itself). A bin's error is at
    # most the 2-norm of all of them: tol * ||X|| = tol * sqrt(n).
    for p in (0, 1, n // 2 - 1, n // 2, n - 1):
        x = np.zeros(n, complex)
        x[p] = 1.0
        got = cuda_fft(x, float32)
        assert np.max(np.abs(got - np.exp(-2j * np.pi * (k * p % n) / n))) <= tol * np.sqrt(n)
    # DC and Nyquist: all the energy in bin 0, and in bin n/2 for the alternating sign
    for x, peak in ((np.ones(n, complex), 0), ((-1.0) ** k + 0j, n // 2)):
        want = np.zeros(n, complex)
        want[peak] = n
        assert np.max(np.abs(cuda_fft(x, float32) - want)) <= tol * n  # ||X|| = n
    # purely imaginary input, and values near the ends of float32's range
    for x in (1j * np.cos(2 * np.pi * 3 * k / n), np.full(n, 1e30 + 1e-30j), np.full(n, 1e-30 + 0j)):
        x = as_working_precision(x, float32)
        assert relative_error(cuda_fft(x, float32), np.fft.fft(x)) <= tol


@pytest.mark.parametrize("float32", PRECISIONS)
@pytest.mark.parametrize("n", FFT_SIZES)
def test_packed_real_frames_give_both_power_spectra(n, float32):
    """The log-mel and Kaldi kernels transform two real frames as a + j b and unpack per bin."""
    rng = np.random.default_rng(7 * n)
    a = rng.standard_normal(n)
    for b in (rng.standard_normal(n) * 1e-3, np.zeros(n)):  # the odd last frame packs b = 0
        power_a, power_b = _C.testing.fft_packed_powers(a, b, float32)
        # A bin of the packed transform Z is off by at most delta = bound * ||Z||; unpacking
        # averages two bins, so |A[k]| is too, and |A[k]|^2 by 2 |A[k]| delta + delta^2.
        delta = bound(n, float32) * np.linalg.norm(np.fft.fft(a + 1j * b))
        for got, frame in ((power_a, a), (power_b, b)):
            want = np.abs(np.fft.rfft(frame)) ** 2
            assert got.dtype == np.float32 and got.shape == (n // 2 + 1,)
            allowed = 2 * np.sqrt(want) * delta + delta**2 + eps(True) * want  # + the float32 output's rounding
            assert np.all(np.abs(got - want) <= allowed)


@pytest.mark.parametrize("n", FFT_SIZES)
def test_dynamic_range_claimed_in_fft_h(n):
    """double resolves a tone 160 dB below the frame's peak; float is within 0.01 dB at 80 dB below."""
    t = np.arange(n)
    for float32, below_db, tol_db in ((False, 160.0, 0.01), (True, 80.0, 0.01)):
        quiet = 10.0 ** (-below_db / 20)
        x = np.cos(2 * np.pi * 37 * t / n) + quiet * np.cos(2 * np.pi * 101 * t / n)
        power, _ = _C.testing.fft_packed_powers(x, np.zeros(n), float32)
        want = (quiet * n / 2) ** 2
        assert abs(10 * np.log10(power[101] / want)) <= tol_db


def test_refuses_lengths_the_kernels_do_not_take():
    with pytest.raises(ValueError, match="power of two"):
        _C.testing.fft_forward(np.zeros(12), np.zeros(12), False)
    with pytest.raises(ValueError, match="one length"):
        _C.testing.fft_forward(np.zeros(8), np.zeros(4), False)
