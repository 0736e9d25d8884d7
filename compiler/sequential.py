"""An always-valid two-sample test on thumbs-up rates: the mixture SPRT (mSPRT).

Johari, Koomen, Pekelis & Walsh, "Peeking at A/B Tests: Why it matters, and what to do about it"
(KDD 2017), and Johari, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B
Tests" (Operations Research 70(3), 2022). With the difference of rates theta_hat = p_B - p_A, its
variance V = sigma_A^2/n_A + sigma_B^2/n_B (normal approximation) and a normal mixing
distribution N(0, tau^2) over the true difference under the alternative, the mixture likelihood
ratio against H0: theta = 0 is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))

(the paper's Bernoulli form with V_n = n V for n pairs). Lambda is a nonnegative martingale under
H0, so by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha: p = min(1, 1/Lambda) is an
always-valid p-value, and rejecting the first time p < alpha keeps the error rate at alpha
however often (and however irregularly) one looks. V is estimated with the pooled rate, which
is its value under H0 and never 0 at small n the way per-arm plug-ins are.

tau tunes where the test is most powerful: tau = the minimum detectable effect (MDE) puts the
mixture's scale on the lifts worth detecting; a smaller tau detects small lifts sooner at large n
and large lifts later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Test:
    lift: float  # p_candidate - p_production
    p_value: float  # always valid; 1.0 when there is nothing to compare
    log_lr: float  # log of the mixture likelihood ratio


def msprt(ups_a: int, n_a: int, ups_b: int, n_b: int, tau: float) -> Test:
    """Arm A is the control (production), B the treatment (candidate)."""
    if n_a <= 0 or n_b <= 0 or tau <= 0:
        return Test(0.0, 1.0, 0.0)
    lift = ups_b / n_b - ups_a / n_a
    pooled = (ups_a + ups_b) / (n_a + n_b)
    v = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if v <= 0.0:  # every thumb the same way on both arms: no evidence of a difference
        return Test(lift, 1.0, 0.0)
    t2 = tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * lift * lift / (2.0 * v * (v + t2))
    return Test(lift, min(1.0, math.exp(-log_lr)) if log_lr < 700 else 0.0, log_lr)
