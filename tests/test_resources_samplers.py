"""A1111 samplers and schedule types as diffusers schedulers, built on the tiny model's own
scheduler config, and back to A1111 names for the infotext."""

from __future__ import annotations

import importlib.util
import json

import pytest

from pipeline import models, resources
from pipeline.errors import AiimgError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 vs diffusers' schedulers
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None


@pytest.fixture(scope="module")
def base_config():
    return json.loads((models.ensure_tiny() / "scheduler" / "scheduler_config.json").read_text())


def buildable():
    for name, spec in resources.SAMPLERS.items():
        if spec.scheduler == "DPMSolverSDEScheduler" and not HAS_TORCHSDE:
            continue
        yield name


@pytest.mark.parametrize("sampler", list(buildable()))
@pytest.mark.parametrize("schedule", ["", "Karras", "Exponential"])
def test_every_sampler_builds_and_steps_on_the_tiny_config(base_config, sampler, schedule):
    spec = resources.SAMPLERS[sampler]
    try:
        scheduler = resources.scheduler_for(sampler, schedule, base_config)
    except AiimgError as exc:
        # only a schedule the diffusers class lacks may be refused, and it must say so
        assert schedule and "has no such schedule" in str(exc)
        return
    assert type(scheduler).__name__ == spec.scheduler
    assert all(scheduler.config[k] == v for k, v in spec.kwargs)
    scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10
    assert resources.sampler_names(scheduler) == (sampler, "" if schedule in ("", spec.schedule) else schedule)


def test_karras_and_automatic_as_a1111_resolves_them(base_config):
    karras = resources.scheduler_for("DPM++ 2M", "Karras", base_config)
    assert karras.config.use_karras_sigmas and karras.config.algorithm_type == "dpmsolver++"
    automatic = resources.scheduler_for("DPM++ 2M", "", base_config)
    assert automatic.config.use_karras_sigmas  # A1111 1.9+ runs DPM++ 2M with Karras by default
    plain = resources.scheduler_for("DPM++ 2M", "Uniform", base_config)
    assert not plain.config.use_karras_sigmas
    assert resources.sampler_names(plain) == ("DPM++ 2M", "Uniform")
    sde = resources.scheduler_for("DPM++ 2M SDE", "", base_config)
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_exponential_sigmas


def test_old_combined_name_builds_the_same_scheduler(base_config):
    old = resources.scheduler_for("DPM++ 2M SDE Karras", "", base_config)
    new = resources.scheduler_for("DPM++ 2M SDE", "Karras", base_config)
    assert dict(old.config) == dict(new.config)


def test_a_base_config_with_karras_on_gets_the_schedule_asked_for(base_config):
    scheduler = resources.scheduler_for("Euler", "Exponential", {**base_config, "use_karras_sigmas": True})
    assert scheduler.config.use_exponential_sigmas and not scheduler.config.use_karras_sigmas


def test_a_schedule_the_class_lacks_is_refused_clearly(base_config):
    with pytest.raises(AiimgError, match="'Euler a' with schedule type 'Karras'.*EulerAncestralDiscreteScheduler"):
        resources.scheduler_for("Euler a", "Karras", base_config)


def test_unknown_sampler_lists_the_known_ones(base_config):
    with pytest.raises(AiimgError, match="'Restart'.*known: .*DPM\\+\\+ 2M"):
        resources.scheduler_for("Restart", "", base_config)


@pytest.mark.skipif(HAS_TORCHSDE, reason="torchsde is installed here")
def test_dpmpp_sde_without_torchsde_says_what_to_install(base_config):
    with pytest.raises(AiimgError, match="pip install torchsde"):
        resources.scheduler_for("DPM++ SDE", "Karras", base_config)


def test_a_scheduler_a1111_has_no_name_for_keeps_its_class_name(base_config):
    import diffusers

    deis = diffusers.DEISMultistepScheduler.from_config(base_config)
    assert resources.sampler_names(deis) == ("DEISMultistepScheduler", "")
    pndm = diffusers.PNDMScheduler.from_config(base_config)  # the tiny model's own: PLMS
    assert resources.sampler_names(pndm) == ("PLMS", "")
