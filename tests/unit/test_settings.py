import dataclasses
import re

import pytest

from appliance import settings


def test_every_setting_is_documented_in_the_config_file_with_a_comment():
    text = settings.DEFAULT_CONFIG.read_text()
    documented = dict(re.findall(r"(?m)^# (.+)\n(\w+) =", text) and
                      [(k, c) for c, k in re.findall(r"(?m)^# (.+)\n(\w+) =", text)])
    names = {f.name for f in dataclasses.fields(settings.Settings)}
    assert names == set(documented), f"undocumented: {names - set(documented)}, stale: {set(documented) - names}"


def test_defaults_in_the_file_match_the_code():
    assert settings.load() == settings.Settings(**{
        **{f.name: f.default for f in dataclasses.fields(settings.Settings)},
    })


def test_environment_overrides_the_file_and_flags_override_the_environment(tmp_path):
    env = {"APPLIANCE_PORT": "9123", "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "true",
           "APPLIANCE_WEBHOOK_RETRY_SCALE": "0.5", "APPLIANCE_DATA_DIR": str(tmp_path)}
    s = settings.load(environ=env)
    assert (s.port, s.allow_loopback_targets, s.webhook_retry_scale, s.data_dir) == (9123, True, 0.5, tmp_path)
    assert settings.load(environ=env, port=7000).port == 7000


def test_bad_values_are_refused_with_the_setting_named(tmp_path):
    with pytest.raises(settings.SettingsError, match="APPLIANCE|port"):
        settings.load(environ={"APPLIANCE_PORT": "eighty"})
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(settings.SettingsError, match="unknown setting.*colour"):
        settings.load(bad, environ={})
