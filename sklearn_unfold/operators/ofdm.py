"""Pilot observations of an OFDM channel: the partial-DFT operator of pilot-based channel estimation.

An OFDM symbol of ``K`` subcarriers with a cyclic prefix of at least ``L`` samples turns a channel
of ``L`` delay taps ``h`` into the frequency response ``H = F_L h`` with
``F_L = F[:, :L]``, ``F_{kl} = e^{-2πi kl/K}`` (no normalisation). Pilot symbols of unit modulus
on the subcarriers ``𝒫`` (``|𝒫| = P``), divided out at the receiver, observe ``H_𝒫`` in noise;
:class:`PilotDFT` is that map scaled to unit-norm columns, ``A = F[𝒫, :L] / √P`` (Coleri et
al., "Channel estimation techniques based on pilot arrangement in OFDM systems", IEEE Trans.
Broadcast. 48, 2002; Bajwa et al., "Compressed channel sensing", Proc. IEEE 98, 2010).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor

from ._base import LinearOperator
from .dense import _cast_svd, _digest, _target_dtype

__all__ = ["PilotDFT", "pilot_dft_matrix", "unitary_dft_matrix"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _check_pilots(pilots, n_subcarriers: int) -> np.ndarray:
    """Sorted distinct pilot subcarriers in ``[0, K)`` from indices or a boolean mask of length K."""
    arr = np.asarray(pilots.detach().cpu() if isinstance(pilots, Tensor) else pilots)
    if arr.dtype == bool:
        if arr.shape != (n_subcarriers,):
            raise ValueError(f"a boolean pilots mask must have shape ({n_subcarriers},) (one entry "
                             f"per subcarrier); got shape {arr.shape}.")
        arr = np.flatnonzero(arr)
    if arr.size < 1:
        raise ValueError("pilots must hold at least one subcarrier; got none (P = 0).")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"pilots must be integer subcarrier indices or a boolean mask; got an "
                        f"array of dtype {arr.dtype}.")
    if arr.ndim != 1:
        raise ValueError(f"pilots must be 1-D (one index per pilot subcarrier); got shape "
                         f"{arr.shape}.")
    if arr.min() < 0 or arr.max() >= n_subcarriers:
        raise ValueError(f"pilots must lie in [0, n_subcarriers={n_subcarriers}); got values from "
                         f"{arr.min()} to {arr.max()}.")
    srt = np.sort(arr).astype(np.int64)
    dup = srt[1:][srt[1:] == srt[:-1]]
    if dup.size:
        raise ValueError(f"pilots must be distinct; subcarrier {int(dup[0])} appears more than once.")
    return srt


def pilot_dft_matrix(pilots, n_subcarriers: int, n_taps: int) -> np.ndarray:
    r"""The dense matrix of :class:`PilotDFT`, ``F[𝒫, :L] / √P`` (complex128, shape ``(P, L)``).

    Entries ``e^{-2πi p l / K} / √P`` for ``p ∈ 𝒫`` (sorted) and ``0 ≤ l < L``; the phase is
    reduced exactly (``p l mod K`` in integers) before the exponential.
    """
    K = _positive_int(n_subcarriers, "n_subcarriers")
    p = _check_pilots(pilots, K)
    L = _positive_int(n_taps, "n_taps")
    phase = (p[:, None] * np.arange(L)[None, :]) % K
    return np.exp(-2j * np.pi * phase / K) / math.sqrt(p.size)


def unitary_dft_matrix(n: int) -> np.ndarray:
    r"""The unitary ``n``-point DFT matrix ``F_{ma} = e^{-2πi ma/n} / √n`` (complex128)."""
    n = _positive_int(n, "n")
    idx = np.arange(n)
    return np.exp(-2j * np.pi * ((idx[:, None] * idx[None, :]) % n) / n) / math.sqrt(n)


class PilotDFT(LinearOperator):
    r"""OFDM pilot observations of a delay-domain channel, ``A = F[𝒫, :L] / √P``, matrix-free.

    .. math::
        (A h)_p = \frac{1}{\sqrt P} \sum_{l=0}^{L-1} h_l\, e^{-2\pi i p l / K}, \quad p ∈ 𝒫,
        \qquad (Aᴴ v)_l = \frac{1}{\sqrt P} \sum_{p ∈ 𝒫} v_p\, e^{+2\pi i p l / K}

    computed with ``K``-point FFTs: the forward map zero-pads ``h`` to ``K`` taps, transforms and
    keeps the pilots; the adjoint scatters ``v`` onto the ``K`` subcarriers, applies the
    unnormalised inverse transform (``ifft(norm="forward")``) and keeps the first ``L`` taps.
    Every column has unit norm (``‖A‖²_F = L``), so ``E‖A h‖² = E‖h‖²`` for any channel
    prior: with ``P`` measurements, the signal power per measurement is ``E‖h‖²/P``.

    ``A Aᴴ = (L/P) I`` exactly when ``(p − q) L ≡ 0 (mod K)`` for all distinct pilots ``p, q``
    (e.g. ``L`` a multiple of ``P`` with comb pilots of spacing ``K/P``); then
    :attr:`row_orthogonal_scale` is ``L/P``. VAMP's LMMSE stage uses the thin SVD of the small
    ``(P, L)`` matrix (:meth:`svd`, computed once in double precision and cached).

    Parameters
    ----------
    pilots : array-like of int, shape (P,), or array-like of bool, shape (K,)
        The pilot subcarriers (distinct, in ``[0, K)``), or a mask of them. They are sorted: the
        measurements are in increasing subcarrier order.
    n_subcarriers : int
        ``K``, the FFT size.
    n_taps : int
        ``L ≤ K``, the number of delay taps (the cyclic-prefix length).
    dtype : torch.dtype, optional
        complex64 or complex128 (default); a real dtype is taken as its precision.
    device : str or torch.device, optional

    Attributes
    ----------
    pilots : ndarray of int64, shape (P,)
        The sorted pilot subcarriers.
    n_subcarriers, n_taps, n_pilots : int
        ``K``, ``L`` and ``P``.

    Examples
    --------
    >>> from sklearn_unfold.operators import PilotDFT
    >>> A = PilotDFT.random(48, 1024, 128, random_state=0)
    >>> A.shape
    (48, 128)
    """

    def __init__(self, pilots, n_subcarriers: int, n_taps: int, *,
                 dtype: torch.dtype | None = None, device=None):
        K = _positive_int(n_subcarriers, "n_subcarriers")
        L = _positive_int(n_taps, "n_taps")
        if L > K:
            raise ValueError(f"n_taps must be at most n_subcarriers (a channel longer than the "
                             f"OFDM symbol aliases); got n_taps={L} > n_subcarriers={K}.")
        self.pilots = _check_pilots(pilots, K)
        self.n_subcarriers, self.n_taps, self.n_pilots = K, L, int(self.pilots.size)
        self.shape = (self.n_pilots, L)
        self._dtype = self._cast(torch.complex128 if dtype is None else dtype)
        self._index = torch.as_tensor(self.pilots, device=torch.device(
            "cpu" if device is None else device))
        self._svd: tuple[Tensor, Tensor, Tensor] | None = None
        diff = self.pilots[:, None] - self.pilots[None, :]
        orthogonal = bool(np.all(((diff * L) % K == 0) | (diff == 0)))
        self.row_orthogonal_scale = L / self.n_pilots if orthogonal else None

    @classmethod
    def random(cls, n_pilots: int, n_subcarriers: int, n_taps: int, pattern: str = "random",
               random_state=None, *, offset: int | None = None, **kwargs) -> PilotDFT:
        """Pilots drawn at random or on a comb; ``kwargs`` go to the constructor.

        Parameters
        ----------
        n_pilots, n_subcarriers, n_taps : int
            ``P``, ``K`` and ``L``.
        pattern : {"random", "comb"}, default="random"
            ``"random"``: ``P`` distinct subcarriers uniformly at random. ``"comb"``: evenly
            spaced, ``⌊jK/P⌋ + offset`` for ``j = 0, …, P−1`` (spacing ``K/P`` when ``P``
            divides ``K``).
        random_state : int, RandomState instance or None
        offset : int, optional
            The comb's first pilot, in ``[0, ⌊K/P⌋)``; drawn uniformly when omitted.
        """
        from sklearn.utils import check_random_state

        P = _positive_int(n_pilots, "n_pilots")
        K = _positive_int(n_subcarriers, "n_subcarriers")
        if P > K:
            raise ValueError(f"n_pilots must be at most n_subcarriers; got n_pilots={P} > "
                             f"n_subcarriers={K}.")
        rng = check_random_state(random_state)
        if pattern == "random":
            if offset is not None:
                raise ValueError(f"offset applies to pattern='comb' only; got offset={offset!r} "
                                 "with pattern='random'.")
            pilots = np.sort(rng.choice(K, size=P, replace=False))
        elif pattern == "comb":
            span = K // P
            if offset is None:
                offset = int(rng.randint(span))
            elif isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) \
                    or not 0 <= offset < span:
                raise ValueError(f"offset must be an integer in [0, {span}) for {P} comb pilots on "
                                 f"{K} subcarriers; got {offset!r}.")
            pilots = (np.arange(P) * K) // P + int(offset)
        else:
            raise ValueError(f"pattern must be 'random' or 'comb'; got {pattern!r}.")
        return cls(pilots, K, n_taps, **kwargs)

    # ------------------------------------------------------------------ data
    def _cast(self, dtype: torch.dtype) -> torch.dtype:
        out = _target_dtype(torch.complex128, dtype)
        if dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            raise TypeError(f"PilotDFT supports complex64/complex128 data (float32/float64 are "
                            f"taken as their precision); got dtype={dtype}.")
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._index.device

    def to(self, dtype=None, device=None) -> PilotDFT:
        new_dtype = self._dtype if dtype is None else self._cast(dtype)
        device = self.device if device is None else torch.device(device)
        if new_dtype == self._dtype and device == self.device:
            return self
        out = copy.copy(self)
        out.__dict__.pop("_memo_values", None)  # values of this operator, not of the copy
        out._dtype, out._index = new_dtype, self._index.to(device)
        out._svd = _cast_svd(self._svd, new_dtype, device)
        return out

    def _prepare(self, x: Tensor, width: int, name: str) -> Tensor:
        if x.ndim != 2 or x.shape[-1] != width:
            raise ValueError(f"{name} must be a row batch of shape (n, {width}); got shape "
                             f"{tuple(x.shape)}.")
        return x.to(device=self.device, dtype=torch.promote_types(x.dtype, self._dtype))

    # ------------------------------------------------------------------ maps
    def forward(self, x: Tensor) -> Tensor:
        x = self._prepare(x, self.n_taps, "x")
        z = torch.fft.fft(x, n=self.n_subcarriers, dim=-1)
        return z.index_select(-1, self._index) / math.sqrt(self.n_pilots)

    def adjoint(self, v: Tensor) -> Tensor:
        v = self._prepare(v, self.n_pilots, "v")
        z = v.new_zeros((v.shape[0], self.n_subcarriers)).index_copy(-1, self._index, v)
        out = torch.fft.ifft(z, dim=-1, norm="forward")[:, :self.n_taps]
        return out / math.sqrt(self.n_pilots)

    def frequency_response(self, h):
        r"""The frequency response ``H = F[:, :L] h`` on all ``K`` subcarriers (no normalisation).

        ``F[:, :L]`` has orthogonal columns of norm ``√K``, so ``‖F_L(h − ĥ)‖² = K ‖h − ĥ‖²``:
        the NMSE of frequency responses equals the NMSE of the delay-domain channels.

        Parameters
        ----------
        h : ndarray or Tensor of shape (n, L) or (L,)

        Returns
        -------
        ndarray or Tensor of shape (n, K) or (K,)
            A tensor for a tensor, else a complex128 ndarray.
        """
        is_tensor = isinstance(h, Tensor)
        arr = h if is_tensor else np.asarray(h)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.n_taps:
            raise ValueError(f"h must have shape (n, {self.n_taps}) or ({self.n_taps},); got "
                             f"shape {tuple(arr.shape)}.")
        if is_tensor:
            return torch.fft.fft(arr, n=self.n_subcarriers, dim=-1)
        return np.fft.fft(arr.astype(np.complex128, copy=False), n=self.n_subcarriers, axis=-1)

    def to_dense(self) -> Tensor:
        A = pilot_dft_matrix(self.pilots, self.n_subcarriers, self.n_taps)
        return torch.as_tensor(A).to(dtype=self._dtype, device=self.device)

    # ------------------------------------------------------------------ SVD and norms
    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD ``A = U diag(s) Vᴴ`` of the ``(P, L)`` matrix: ``U (P, R)``, ``s (R,)``,
        ``V (L, R)``, ``R = min(P, L)`` (singular values below round-off dropped), computed once
        in complex128 and cached in the operator's dtype."""
        if self._svd is None:
            A = torch.as_tensor(pilot_dft_matrix(self.pilots, self.n_subcarriers, self.n_taps))
            U, s, Vh = torch.linalg.svd(A, full_matrices=False)
            keep = s > s[0] * max(self.shape) * torch.finfo(s.dtype).eps
            svd = (U[:, keep].contiguous(), s[keep], Vh[keep].conj().T.contiguous())
            self._svd = _cast_svd(svd, self._dtype, self.device)
        return self._svd

    def _norm_sq(self) -> Tensor:
        if self.row_orthogonal_scale is not None:
            return torch.tensor(float(self.row_orthogonal_scale), dtype=torch.float64)
        return self.svd()[1][0].to(torch.float64) ** 2

    def _frobenius_sq(self) -> Tensor:
        return torch.tensor(float(self.n_taps), dtype=torch.float64)  # L unit-norm columns

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        return (f"pilot-DFT{self.shape}:K={self.n_subcarriers}:"
                f"{_digest(torch.as_tensor(self.pilots))}")

    def __repr__(self) -> str:
        return (f"PilotDFT(n_pilots={self.n_pilots}, n_subcarriers={self.n_subcarriers}, "
                f"n_taps={self.n_taps}, dtype={self._dtype})")

