"""The beta-weighted ELBO (beta-VAE) and its KL schedules: constant, linear warm-up, cyclical."""

from ...errors import ConfigError
from .base import MultiSampleELBO

#: Names of the beta schedules (:class:`BetaSchedule`).
ANNEALING = ("none", "linear", "cyclical")


class BetaSchedule:
    r"""The weight :math:`\beta_e` of the KL term in epoch ``e`` (1-based), a pure function of
    the epoch, so that a resumed run (which knows its epoch) continues the schedule exactly.

    - ``"none"``: :math:`\beta_e = \beta`.
    - ``"linear"`` (KL warm-up, Bowman et al. 2016, "Generating Sentences from a Continuous
      Space", the KL cost annealing of its optimization section):
      :math:`\beta_e = \beta \min(1, (e - 1) / W)`, from 0 in the first epoch to
      :math:`\beta` after ``W = warmup_epochs`` epochs.
    - ``"cyclical"`` (Fu et al. 2019, "Cyclical Annealing Schedule", its cyclical schedule with
      R = 0.5):
      cycles of ``T = 2 W`` epochs; in each, :math:`\beta` rises linearly from 0 over the first
      W epochs and stays at :math:`\beta` for the next W: :math:`\beta_e = \beta
      \min(1, ((e - 1) \bmod T) / W)`.

    Args:
        beta (float): the target weight, >= 0.
        anneal (str): one of :data:`ANNEALING`.
        warmup_epochs (int): W >= 1.

    Raises:
        ConfigError: beta < 0, an unknown schedule, or W < 1.
    """

    def __init__(self, beta=1.0, anneal="none", warmup_epochs=10):
        if not float(beta) >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if anneal not in ANNEALING:
            raise ConfigError(f"unknown schedule {anneal!r}: choose one of {', '.join(ANNEALING)}")
        if int(warmup_epochs) < 1:
            raise ConfigError(f"warmup_epochs must be >= 1, got {warmup_epochs}")
        self.beta, self.anneal, self.warmup_epochs = float(beta), anneal, int(warmup_epochs)

    def __call__(self, epoch):
        """beta_e for epoch ``epoch`` (1-based; a float)."""
        if self.anneal == "none":
            return self.beta
        t = epoch - 1
        if self.anneal == "cyclical":
            t = t % (2 * self.warmup_epochs)
        return self.beta * min(1.0, t / self.warmup_epochs)


class BetaELBO(MultiSampleELBO):
    r"""The beta-weighted ELBO of Higgins et al. (2017), "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework" (its beta-VAE objective):

    .. math::
        \mathcal{L}_\beta(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)]
            - \beta\, \mathrm{KL}(q(z|x) \,\|\, p(z)),

    estimated per datapoint with K reparameterized particles as
    :math:`\frac1K \sum_k [\log p(x|z_k) + \beta(\log p(z_k) - \log q(z_k|x))]`. The weight
    acts on the latent sites' log-densities only (the per-site weight
    ``MultiSampleELBO.latent_weight`` in the log-weights; the model is not copied). The
    gradient is the reparameterized one, unbiased for :math:`\nabla\mathcal{L}_\beta`. At
    beta = 1 the log-weights, the loss and the gradients are exactly those of the ELBO (IWAE
    with K = 1; for K > 1 the ELBO averaged over K particles). beta < 1 is not a lower bound
    on log p(x).

    **Schedules**: ``anneal`` (:class:`BetaSchedule`) makes beta a function of the epoch;
    :meth:`set_epoch` (called by :func:`~pyrolvm.inference.train` at the start of every
    epoch, and of the resumed epoch after a resume) sets it, so a resumed run is bitwise equal
    to the uninterrupted one. Before the first ``set_epoch`` beta is the schedule's epoch-1 value.

    Args:
        num_particles (int): K >= 1.
        beta (float): the (target) KL weight, >= 0.
        anneal (str): ``"none"``, ``"linear"`` or ``"cyclical"``.
        warmup_epochs (int): W of the schedule.
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises:
        ConfigError: as :class:`BetaSchedule` and :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    #: beta changes between epochs (``anneal``): an input of a compiled step, not a constant
    graph_inputs = ("latent_weight",)

    def __init__(
        self,
        num_particles=1,
        beta=1.0,
        anneal="none",
        warmup_epochs=10,
        max_plate_nesting=float("inf"),
        batch_plate=None,
    ):
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        self.schedule = BetaSchedule(beta, anneal, warmup_epochs)
        self.set_epoch(1)

    @property
    def beta(self):
        """The KL weight currently in use."""
        return self.latent_weight

    def set_epoch(self, epoch):
        """Set beta to the schedule's value for ``epoch`` (1-based)."""
        self.latent_weight = self.schedule(epoch)

    def bound(self, log_w):
        """The per-datapoint beta-ELBO estimate, shape (B,): the mean of the beta-weighted
        log-weights over the K particles (nats)."""
        return log_w.mean(0)
