"""Checks of a model/guide pair where it enters the library (:func:`~pyrolvm.inference.train`'s
first step, the evaluator, the diagnostics): the model's latent sites and the guide's sample
sites must match by name and shape, per-datapoint estimates need the rows the caller passed,
and a new pair must not meet the parameters of an older one in Pyro's param store.

The tests are Pyro's own (``pyro.util.check_model_guide_match`` and ``check_site_shape``, as
Pyro's ELBOs run them while validation is enabled); what Pyro only warns about (a site of
the model missing from the guide, a non-auxiliary guide site missing from the model: the
importance weights are then silently wrong) becomes one :class:`~pyrolvm.errors.ConfigError`
that names the sites of both sides and says what to change. Auxiliary guide sites
(``infer={"is_auxiliary": True}``) stay allowed where Pyro allows them.
"""

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from ..errors import ConfigError, PyroLVMError
from .importance import find_batch_plate
from .objectives import MultiSampleELBO

#: The beginnings of the warnings of ``pyro.util.check_model_guide_match`` (Pyro 1.9), each
#: a mismatch between the sites of the model and of the guide.
PAIR_WARNINGS = (
    "Found vars in model but not guide",
    "Found non-auxiliary vars in guide but not model",
    "Found auxiliary vars in the model",
    "Found plate statements in guide but not model",
)

#: The beginning of the warning of ``TraceMeanField_ELBO`` (Pyro 1.9) for a guide it cannot
#: verify to be mean-field (its analytic KL terms are then biased where sites depend on others).
MEAN_FIELD_WARNING = "Failed to verify mean field restriction on the guide"

#: Parts of the ``ValueError`` messages of ``check_model_guide_match`` and
#: ``check_site_shape`` (shapes that disagree between model and guide, or with the plates).
PAIR_ERRORS = (
    "Model and guide shapes disagree",
    "Model and guide event_dims disagree",
    "invalid log_prob shape",
    "dim collision",
    "plate stack overflow",
    "Shape mismatch inside plate",
)

#: Said with a shape mismatch: a guide with parameters per datapoint must see all the rows.
_PER_ROW_HINT = (
    " A guide with parameters per datapoint (non-amortized, e.g. Pyro's AutoNormal) must be "
    "called with all N rows at once, in their order: train(..., batch_size=N, shuffle=False) "
    "and importance_sample(..., batch_size=N)."
)


class PairTraces(NamedTuple):
    """One run of a guide and of its model replayed on the guide's draws.

    Attributes:
        model_trace, guide_trace (pyro.poutine.Trace): the traces, subsample sites included,
            values computed without gradients.
        random_plates (dict): ``{name: (size, subsample_size)}`` of the plates that drew a
            random subsample (``pyro.plate(name, size, subsample_size=...)`` without
            ``subsample=``), whose rows differ from call to call.
    """

    model_trace: Any
    guide_trace: Any
    random_plates: dict[str, tuple[int, int]]


class RandomSubsampleProbe(Messenger):
    """Notes the plates that draw their subsample at random: a plate's subsample site reaching
    this (outermost) handler without a value was given no ``subsample=`` indices, and nothing
    (no replay) fixed it."""

    def __init__(self) -> None:
        super().__init__()
        self.random: dict[str, tuple[int, int]] = {}

    def _process_message(self, msg: Any) -> None:
        fn = msg.get("fn")
        if msg["type"] != "sample" or type(fn).__name__ != "_Subsample":
            return
        size, subsample_size = fn.size, fn.subsample_size
        if msg["value"] is None and subsample_size is not None and subsample_size < size:
            self.random[msg["name"]] = (size, subsample_size)


def trace_pair(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> PairTraces:
    """Trace ``guide(*args, **kwargs)`` and ``model`` replayed on its draws, as Pyro's ELBOs
    do (``pyro.infer.enum.get_importance_trace``), without gradients and with every random
    stream of torch left as it was (the draws come from a fork). Parameters the pair creates
    enter Pyro's param store, as in a first step.

    Returns:
        PairTraces
    """
    devices = sorted(
        {a.device.index or 0 for a in args if isinstance(a, torch.Tensor) and a.is_cuda}
    )
    probe = RandomSubsampleProbe()
    with torch.no_grad(), torch.random.fork_rng(devices=devices), probe:
        unwrapped = poutine.unwrap(guide)
        if isinstance(unwrapped, Messenger):  # a GuideMessenger (Pyro's AutoNormalMessenger)
            guide(*args, **kwargs)
            model_trace, guide_trace = cast(Any, unwrapped).get_traces()
        else:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            replayed = poutine.replay(model, trace=guide_trace)
            try:
                model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, PyroLVMError):
                    raise
                # the model failed on the guide's draws: if its own draws show sites that do
                # not match the guide's (a shape), say so instead of the model's error
                try:
                    alone = poutine.trace(model).get_trace(*args, **kwargs)
                except Exception:
                    raise exc from None
                check_pair_traces(alone, guide_trace)
                raise
    return PairTraces(model_trace, guide_trace, probe.random)


def describe_sites(model_trace: Any, guide_trace: Any) -> str:
    """``"the model's latent sites are 'latent' (event shape (4,)); the guide's sample sites
    are 'z' (event shape (4,))"``: the unobserved sample sites of both traces (subsample
    sites left out, auxiliary guide sites marked)."""

    def sites(trace):
        parts = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            aux = ", auxiliary" if site["infer"].get("is_auxiliary") else ""
            shape = tuple(getattr(site["fn"], "event_shape", ()))
            parts.append(f"{name!r} (event shape {shape}{aux})")
        return ", ".join(parts) or "none"

    return (
        f"the model's latent sites are {sites(model_trace)}; the guide's sample sites "
        f"are {sites(guide_trace)}"
    )


def _mismatch(finding: str, traces: tuple[Trace, Trace] | None) -> ConfigError:
    finding = " ".join(finding.split())
    sites = f": {describe_sites(*traces)}" if traces is not None else ""
    hint = _PER_ROW_HINT if "disagree" in finding or "Shape mismatch" in finding else ""
    return ConfigError(
        f"the model and the guide do not match ({finding}){sites}. Every latent site of the "
        "model needs a guide site of the same name and shape (.to_event(...) for the event "
        "dimensions), and every guide site a model site unless it is marked "
        "infer={'is_auxiliary': True}: rename the sites or fix their shapes." + hint
    )


@contextlib.contextmanager
def _promoted(traces: Callable[[], tuple[Trace, Trace] | None]) -> Iterator[None]:
    with warnings.catch_warnings():
        for text in (*PAIR_WARNINGS, MEAN_FIELD_WARNING):
            warnings.filterwarnings("error", message=text, category=UserWarning)
        try:
            yield
        except UserWarning as exc:
            if str(exc).startswith(MEAN_FIELD_WARNING):
                raise ConfigError(
                    "TraceMeanField_ELBO ('meanfield') needs a mean-field guide, whose sites "
                    "are independent given the data and occur in the model's order, and Pyro "
                    f"could not verify it ({' '.join(str(exc).split())}): with a guide site "
                    "that depends on another (q(z2 | z1)) its analytic KL terms are biased. "
                    "Reorder the guide's sites as the model's if they are independent, or use "
                    "'trace' (Trace_ELBO)"
                ) from None
            if not str(exc).startswith(PAIR_WARNINGS):
                raise
            raise _mismatch(str(exc), traces()) from None
        except ValueError as exc:
            if isinstance(exc, PyroLVMError) or not any(t in str(exc) for t in PAIR_ERRORS):
                raise
            raise _mismatch(str(exc), traces()) from None


@contextlib.contextmanager
def pair_check_errors(
    model: Callable, guide: Callable, *args: Any, **kwargs: Any
) -> Iterator[None]:
    """A context in which the model/guide checks of Pyro (which its ELBOs run while validation
    is enabled) raise :class:`~pyrolvm.ConfigError` instead of a ``UserWarning`` (a mismatch
    of site names: a silently wrong number otherwise) or a ``ValueError`` from deep inside
    Pyro (shapes that disagree). The block runs ``model``/``guide`` on ``args``/``kwargs``
    (e.g. an ELBO's first step); the error names both sides' sites, from one more run of the
    pair.

    Raises:
        ConfigError: in place of Pyro's warning or error.
    """

    def traces():
        try:
            pair = trace_pair(model, guide, *args, **kwargs)
        except Exception:  # the message then gives Pyro's finding alone
            return None
        return pair.model_trace, pair.guide_trace

    with _promoted(traces):
        yield


def check_pair_traces(
    model_trace: Any, guide_trace: Any, max_plate_nesting: float = math.inf
) -> None:
    """Pyro's ``check_model_guide_match`` on a pair of traces and ``check_site_shape`` on each
    sample site (log-densities computed where missing), whatever Pyro's validation setting,
    with what they warn about or raise turned into one :class:`~pyrolvm.ConfigError` that names both
    sets of sites.

    Args:
        model_trace (pyro.poutine.Trace): the model's trace, replayed on the guide's draws.
        guide_trace (pyro.poutine.Trace): the guide's.
        max_plate_nesting (float): the plate dimensions of the traces (particles included),
            or ``inf`` when unknown.

    Raises:
        ConfigError: a latent site of the model that the guide does not sample, a guide site
            absent from the model and not auxiliary, an auxiliary site in the model, a plate
            of the guide absent from the model, shapes that disagree, a log-density whose
            shape does not match its plates.
    """
    with _promoted(lambda: (model_trace, guide_trace)):
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
        with torch.no_grad():
            for trace in (prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)):
                trace.compute_log_prob()
                for site in cast(Any, trace.nodes).values():
                    if site["type"] == "sample":
                        check_site_shape(site, cast(Any, max_plate_nesting))


def auxiliary_sites_outside(guide_trace: Any, plate: Any) -> list[str]:
    """The auxiliary sample sites of the guide outside the batch ``plate`` (a plate frame or
    ``None``): Pyro's AutoContinuous guides draw every latent of every datapoint as one such
    vector, whose density does not split into one importance weight per datapoint."""
    if plate is None:
        return []
    return [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and site["infer"].get("is_auxiliary")
        and not any(f.name == plate.name for f in site["cond_indep_stack"])
    ]


def joint_guide_error(
    names: list[str], plate: Any, guide: Callable, training: bool = False
) -> ConfigError:
    """The error for a guide whose auxiliary sites ``names`` lie outside the batch plate
    (``training``: under a multi-sample objective, else in the evaluator)."""
    return ConfigError(
        f"the guide {type(guide).__name__} draws the latent variables of all datapoints "
        f"jointly, as one vector (its auxiliary site {names[0]!r} lies outside the batch "
        f"plate {plate.name!r}; Pyro's AutoContinuous guides, such as AutoDiagonalNormal, "
        "AutoMultivariateNormal and AutoLowRankMultivariateNormal, work this way), so its "
        "density does not split into one importance weight per datapoint. Use Pyro's "
        "AutoNormal (one Normal per latent site, inside the model's plates) or an amortized "
        "guide (an encoder of x)"
        + (", or train this one with Trace_ELBO ('trace')" if training else "")
    )


def check_pair(
    model: Callable,
    guide: Callable,
    *args: Any,
    per_datapoint: bool = False,
    batch_plate: str | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Check a model/guide pair on one call ``model(*args, **kwargs)``: run the guide and the
    model replayed on its draws once (no gradients; torch's random streams left as they
    were; parameters the pair creates enter the param store) and apply
    :func:`check_pair_traces`. With ``per_datapoint`` (the evaluator, the diagnostics: one
    value per row of the data) also refuse what makes per-datapoint values impossible: a
    plate that draws a random subsample of the rows, and a guide that draws all datapoints'
    latents as one vector (Pyro's AutoContinuous guides).

    Args:
        model (callable): the Pyro model.
        guide (callable): its guide, with the model's signature.
        args, kwargs: one call's arguments (e.g. a minibatch).
        per_datapoint (bool): also check what per-datapoint estimates need (see above).
        batch_plate (str or None): the batch plate's name (default: the outermost plate
            around the first observed site, :func:`~pyrolvm.inference.find_batch_plate`).

    Returns:
        (model_trace, guide_trace): the traces of that run (``pyro.poutine.Trace``).

    Raises:
        ConfigError: see :func:`check_pair_traces`; with ``per_datapoint``, a plate that
            subsamples at random or a guide with auxiliary sites outside the batch plate.
    """
    pair = trace_pair(model, guide, *args, **kwargs)
    check_pair_traces(pair.model_trace, pair.guide_trace)
    if per_datapoint:
        for name, (size, subsample_size) in pair.random_plates.items():
            raise ConfigError(
                f"the plate {name!r} draws a random subsample of {subsample_size} of its {size} "
                f"rows (pyro.plate({name!r}, {size}, subsample_size={subsample_size})) in "
                "every call, so the values cannot be matched to the rows passed in: "
                "per-datapoint estimates need the plate to cover the rows given, in order. "
                f"Write it pyro.plate({name!r}, x.shape[0]) for evaluation, or let the caller "
                f"choose the rows: pyro.plate({name!r}, N, subsample=idx), with the indices "
                "idx passed with the data (model(x, idx), data=(x, idx))"
            )
        plate = find_batch_plate(pair.model_trace, batch_plate)
        joint = auxiliary_sites_outside(pair.guide_trace, plate)
        if joint:
            raise joint_guide_error(joint, plate, guide)
    return pair.model_trace, pair.guide_trace


def _module_params_not_stored(pair: PairTraces) -> list[str]:
    found = []
    for trace in (pair.guide_trace, pair.model_trace):
        for name, site in trace.nodes.items():
            if site["type"] != "param" or len(site["args"]) < 2 or name in found:
                continue
            init = site["args"][1]
            if isinstance(init, torch.nn.Parameter) and site["value"] is not init:
                found.append(name)
    return found


def stale_parameters(
    model: Callable, guide: Callable, *args: Any, pair: PairTraces | None = None, **kwargs: Any
) -> list[str]:
    """The parameters of the pair's networks (registered by ``pyro.module``) that Pyro's param
    store already holds as other tensors, left there by a pair built earlier in the process
    without ``pyro.clear_param_store()``: the networks would compute with their own weights
    while an optimizer steps the stored tensors, and nothing would train. (A module that
    takes the stored values, ``pyro.module(..., update_module_params=True)`` or a
    ``PyroModule``, is not stale: a second run of the pair finds it holding them.)

    Args:
        model, guide (callable): the pair, called with ``args``/``kwargs``.
        pair (PairTraces or None): a run of the pair already made (:func:`trace_pair`).

    Returns:
        list of str: the names in the param store, empty when none is stale.
    """
    found = _module_params_not_stored(pair or trace_pair(model, guide, *args, **kwargs))
    if found:  # confirm: a module that adopted the stored values holds them now
        again = set(_module_params_not_stored(trace_pair(model, guide, *args, **kwargs)))
        found = [name for name in found if name in again]
    return found


def stale_parameters_error(names: list[str]) -> ConfigError:
    """The error for :func:`stale_parameters`' ``names``."""
    shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    return ConfigError(
        f"{len(names)} parameters of this model and guide ({shown}) are already in Pyro's "
        "param store as other tensors, left by a pair built earlier in this process: the "
        "new networks would keep their weights while the optimizer steps the stored ones, "
        "and nothing would train. Call pyro.clear_param_store() before building each new "
        "model and guide (or register the new networks under other names in pyro.module)"
    )


def check_training_pair(
    model: Callable,
    guide: Callable,
    *batch: Any,
    loss: Any,
    num_rows: int,
    batch_size: int,
    shuffle: bool,
) -> int | None:
    """The checks of :func:`~pyrolvm.inference.train`'s first step, on its first minibatch
    ``batch``: no stale parameters (:func:`stale_parameters`); a guide with parameters per
    datapoint (one of Pyro's autoguides with sites inside the batch plate) sees all
    ``num_rows`` rows in their order; a multi-sample objective gets a guide whose density
    splits per datapoint. Runs the pair once (twice when parameters look stale), without
    gradients or random draws.

    Returns:
        int or None: the batch plate's full size N where the loss must be divided by it to
        give a per-datapoint value (a plate ``pyro.plate(name, N, subsample=idx)`` over a
        minibatch of B rows: Pyro scales the loss by N / B); ``None`` where dividing by the
        minibatch's rows does (no subsampling, or a plate subsampling the rows passed in).

    Raises:
        ConfigError: stale parameters; a per-datapoint guide trained on shuffled rows or
            minibatches; a guide drawing all datapoints jointly under a multi-sample
            objective.
    """
    pair = trace_pair(model, guide, *batch)
    stale = stale_parameters(model, guide, *batch, pair=pair)
    if stale:
        raise stale_parameters_error(stale)
    plate = find_batch_plate(pair.model_trace, getattr(loss, "batch_plate", None))
    if plate is None:
        return None
    if isinstance(loss, MultiSampleELBO):
        joint = auxiliary_sites_outside(pair.guide_trace, plate)
        if joint:
            raise joint_guide_error(joint, plate, guide, training=True)
    subsampled = plate.full_size is not None and plate.full_size != plate.size
    if isinstance(guide, AutoGuide) and not subsampled and (shuffle or batch_size < num_rows):
        per_row = [
            name
            for name, site in pair.guide_trace.nodes.items()
            if site["type"] == "sample"
            and not site_is_subsample(site)
            and not site["infer"].get("is_auxiliary")
            and any(f.name == plate.name for f in site["cond_indep_stack"])
        ]
        if per_row:
            raise ConfigError(
                f"the guide {type(guide).__name__} keeps parameters per datapoint (its sites "
                f"{per_row} lie in the plate {plate.name!r}), so row n of every call must be "
                f"datapoint n: train it on all rows in their order, train(..., "
                f"batch_size={num_rows}, shuffle=False), or use an amortized guide (an "
                "encoder of x) to train on shuffled minibatches"
            )
    rows = len(batch[0]) if batch and isinstance(batch[0], torch.Tensor) else None
    if subsampled and plate.full_size != rows:
        return int(cast(int, plate.full_size))
    return None
