"""Linear models from Gaussian assumptions: closed-form regression and softmax (kexue.fm/archives/8578).

Row-vector convention of the chapter: a sample is a row ``x`` of ``X: (N, n)`` and the model is
``x W + b``. Two closed forms live here:

- :func:`gaussian_linear_regression`: condition a joint Gaussian on ``x``,
  ``W = Sigma_xx^{-1} Sigma_xy``, ``b = mu_y - mu_x W`` (moment estimates; equal to least squares);
- :func:`analytic_softmax` / :func:`analytic_logistic`: class-conditional Gaussians with one
  shared covariance ``Sigma`` (linear discriminant analysis) turn Bayes' rule into a softmax with
  ``w_i = Sigma^{-1} mu_i``, ``b_i = log p_i - mu_i Sigma^{-1} mu_i / 2``.

:func:`fit_softmax_mle` is the reference they are compared with: the maximum-likelihood softmax
regression, fitted by L-BFGS. Linear algebra is done with Cholesky solves, never inverses.
"""

from __future__ import annotations

import torch

from kexue_lib._core import check_int, check_positive, check_shape, check_tensor

__all__ = [
    "analytic_logistic",
    "analytic_softmax",
    "class_statistics",
    "fit_softmax_mle",
    "gaussian_linear_regression",
    "predict_logits",
    "whitening_transform",
]


def _check_X(X: torch.Tensor, name: str = "X") -> torch.Tensor:
    check_tensor(name, X, floating=True)
    check_shape(name, X, (None, None))
    if X.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 rows (samples), got {X.shape[0]}")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name}: expected finite entries, got NaN or inf")
    return X


def _check_labels(y: torch.Tensor, N: int, num_classes: int, name: str = "y") -> torch.Tensor:
    check_tensor(name, y)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor of class ids, got dtype {y.dtype}")
    check_shape(name, y, (N,))
    if N and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name}: expected class ids in [0, {num_classes - 1}], "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    return y.long()


def _spd_solve(S: torch.Tensor, B: torch.Tensor, name: str) -> torch.Tensor:
    """``S^{-1} B`` for a symmetric positive-definite ``S`` via Cholesky (clear error if singular)."""
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) != 0:
        raise ValueError(
            f"{name}: expected a positive-definite covariance, got a singular or indefinite one "
            "(fewer samples than features, or duplicated features); use shrinkage > 0"
        )
    return torch.cholesky_solve(B, L)


def gaussian_linear_regression(
    X: torch.Tensor, Y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear regression as the conditional mean of a joint Gaussian fitted by moments.

    X: (N, n), Y: (N, m) or (N,). Returns ``W: (n, m)`` (or ``(n,)``) and ``b: (m,)`` (or a
    scalar) with ``W = Sigma_xx^{-1} Sigma_xy`` and ``b = mu_y - mu_x W`` (eq. logistic-gauss-cond);
    these are the ordinary least-squares coefficients with an intercept.
    """
    _check_X(X)
    check_tensor("Y", Y, floating=True)
    vector = Y.dim() == 1
    Y2 = Y[:, None] if vector else Y
    check_shape("Y", Y2, (X.shape[0], None))
    if Y2.dtype != X.dtype or Y2.device != X.device:
        raise ValueError(
            f"Y: expected dtype {X.dtype} on {X.device} like X, got {Y2.dtype} on {Y2.device}"
        )
    N = X.shape[0]
    mu_x, mu_y = X.mean(0), Y2.mean(0)
    Xc, Yc = X - mu_x, Y2 - mu_y
    S_xx = Xc.T @ Xc / N
    S_xy = Xc.T @ Yc / N
    W = _spd_solve(S_xx, S_xy, "X")
    b = mu_y - mu_x @ W
    return (W[:, 0], b[0]) if vector else (W, b)


def class_statistics(
    X: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class frequencies, class means and the pooled within-class covariance (1/N).

    X: (N, n), y: (N,) ids in ``[0, K)``. Returns ``p: (K,)``, ``mu: (K, n)`` and
    ``Sigma = (1/N) sum_j (x_j - mu_{y_j})^T (x_j - mu_{y_j}) = sum_i p_i Cov_i`` (biased
    normalisation; equal to ``Cov(X) + mu~^T mu~ - sum_i p_i mu_i^T mu_i``, eq. logistic-sigma).
    Every class must have at least one sample.
    """
    _check_X(X)
    check_int("num_classes", num_classes, minimum=2)
    y = _check_labels(y, X.shape[0], num_classes)
    N = X.shape[0]
    counts = torch.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"y: expected every class to have a sample, got none for classes {empty}")
    counts = counts.to(X.dtype)
    sums = torch.zeros(num_classes, X.shape[1], dtype=X.dtype, device=X.device)
    sums.index_add_(0, y, X)
    mu = sums / counts[:, None]
    R = X - mu[y]
    Sigma = R.T @ R / N
    Sigma = (Sigma + Sigma.T) / 2
    return counts / N, mu, Sigma


def whitening_transform(
    X: torch.Tensor, *, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, m)`` with ``(X - m) T`` of mean 0 and covariance I (biased, 1/N): ``T = U L^{-1/2}``.

    X: (N, n). ``U L U^T`` is the eigendecomposition of the covariance; eigenvalues below
    ``eps * max`` are raised to it (then the whitened covariance is I only on the rest).
    """
    _check_X(X)
    check_positive("eps", eps)
    m = X.mean(0)
    Xc = X - m
    C = Xc.T @ Xc / X.shape[0]
    lam, U = torch.linalg.eigh((C + C.T) / 2)
    lam = lam.clamp_min(eps * lam.abs().max().clamp_min(torch.finfo(X.dtype).tiny))
    return U * lam.rsqrt(), m


def _shrunk(Sigma: torch.Tensor, shrinkage: float) -> torch.Tensor:
    if shrinkage == 0:
        return Sigma
    n = Sigma.shape[0]
    target = torch.diagonal(Sigma).sum() / n
    eye = torch.eye(n, dtype=Sigma.dtype, device=Sigma.device)
    return (1 - shrinkage) * Sigma + shrinkage * target * eye


def _lda_weights(
    p: torch.Tensor, mu: torch.Tensor, Sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    W = _spd_solve(Sigma, mu.T, "X")  # (n, K), column i = Sigma^{-1} mu_i
    b = torch.log(p) - 0.5 * (mu * W.T).sum(-1)
    return W, b


def analytic_softmax(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    whiten: bool = True,
    shrinkage: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-form softmax regression of a shared-covariance Gaussian class model.

    X: (N, n), y: (N,). Returns ``W: (n, K)``, ``b: (K,)`` in the original coordinates, with
    logits ``X W + b`` and ``W[:, i] = Sigma^{-1} mu_i``, ``b_i = log p_i - mu_i Sigma^{-1} mu_i / 2``
    (eq. logistic-softmax), ``p, mu, Sigma`` from :func:`class_statistics`.
    ``shrinkage`` in [0, 1] replaces ``Sigma`` by ``(1 - s) Sigma + s (tr Sigma / n) I``.
    ``whiten=True`` first maps ``X`` to mean 0 and covariance I (:func:`whitening_transform`),
    fits there (where ``Sigma = I - sum_i p_i mu_i^T mu_i``) and folds the map back into
    ``W, b``; the shrinkage is applied to the same original-coordinate ``Sigma``, so both
    routes give the same probabilities (logits up to a shift common to all classes) up to
    rounding; whitening needs a non-singular ``Cov(X)``.
    """
    _check_X(X)
    check_int("num_classes", num_classes, minimum=2)
    if not isinstance(whiten, bool):
        raise TypeError(f"whiten: expected a bool, got {type(whiten).__name__}")
    check_positive("shrinkage", shrinkage, strict=False)
    if shrinkage > 1:
        raise ValueError(f"shrinkage: expected a number in [0, 1], got {shrinkage!r}")
    if not whiten:
        p, mu, Sigma = class_statistics(X, y, num_classes)
        return _lda_weights(p, mu, _shrunk(Sigma, shrinkage))
    T, m = whitening_transform(X)
    Xw = (X - m) @ T
    p, mu_w, Sigma_w = class_statistics(Xw, y, num_classes)
    if shrinkage:
        # (1 - s) Sigma + s c I in original coordinates is (1 - s) Sigma_w + s c T^T T here,
        # with tr(Sigma) = tr(T^{-T} Sigma_w T^{-1}) = tr(Sigma_w (T^T T)^{-1})
        TtT = T.T @ T
        c = torch.trace(torch.linalg.solve(TtT, Sigma_w)) / X.shape[1]
        Sigma_w = (1 - shrinkage) * Sigma_w + shrinkage * c * TtT
    W_w, b_w = _lda_weights(p, mu_w, Sigma_w)
    W = T @ W_w
    return W, b_w - m @ W


def analytic_logistic(X: torch.Tensor, y01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary closed form: ``p(1|x) = sigmoid(x w + b)`` under two shared-covariance Gaussians.

    X: (N, n), y01: (N,) in {0, 1}. ``w = Sigma^{-1}(mu_1 - mu_0)``,
    ``b = (mu_0 Sigma^{-1} mu_0 - mu_1 Sigma^{-1} mu_1)/2 + log(p_1/p_0)`` (eq. logistic-binary).
    Returns ``w: (n,)`` and a scalar ``b``.
    """
    _check_X(X)
    p, mu, Sigma = class_statistics(X, y01, 2)
    W, b = _lda_weights(p, mu, Sigma)
    return W[:, 1] - W[:, 0], b[1] - b[0]


def predict_logits(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``X W + b``: X: (N, n), W: (n, K), b: (K,) -> (N, K) (or W: (n,), b scalar -> (N,))."""
    check_tensor("X", X, floating=True)
    check_tensor("W", W, floating=True)
    check_tensor("b", b, floating=True)
    if X.shape[-1] != W.shape[0]:
        raise ValueError(f"W: expected {X.shape[-1]} rows to match X, got {W.shape[0]}")
    return X @ W + b


def fit_softmax_mle(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    l2: float = 0.0,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-likelihood softmax regression by L-BFGS (the reference the closed form is judged by).

    Minimises ``mean_j CE(x_j W + b, y_j) + (l2/2) ||W||_F^2`` (the bias is not penalised;
    sklearn's ``LogisticRegression(C=1/(l2 N))`` minimises the same objective times ``N``).
    X: (N, n), y: (N,). Returns ``W: (n, K)`` and ``b: (K,)`` in ``X``'s dtype and device;
    ``W, b`` are defined up to a common shift, compare probabilities. With ``l2 = 0`` on
    separable data the optimum is at infinity and the result depends on ``max_iter``.
    """
    _check_X(X)
    check_int("num_classes", num_classes, minimum=2)
    y = _check_labels(y, X.shape[0], num_classes)
    check_positive("l2", l2, strict=False)
    check_int("max_iter", max_iter)
    check_positive("tol", tol)
    n = X.shape[1]
    Wb = torch.zeros(n + 1, num_classes, dtype=X.dtype, device=X.device, requires_grad=True)
    Xa = torch.cat([X, torch.ones_like(X[:, :1])], 1)
    opt = torch.optim.LBFGS(
        [Wb],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-3,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xa @ Wb, y)
        if l2:
            loss = loss + 0.5 * l2 * (Wb[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    Wb = Wb.detach()
    return Wb[:-1], Wb[-1]
