import pytest

from inventory_pipeline.settings import Settings, SettingsError


def test_defaults_are_the_studys_configuration():
    s = Settings()
    assert (s.instance_type, s.instance_count, s.batch_size, s.lr, s.epochs, s.model) == (
        "ml.c5.xlarge",
        2,
        32,
        0.001,
        3,
        "resnet50",
    )
    assert s.root == "abid/"


def test_params_override_environment_and_are_coerced():
    env = {
        "INVENTORY_BUCKET": "team-bucket",
        "INVENTORY_PREFIX": "team/x",
        "INVENTORY_SUBNETS": "subnet-1,subnet-2",
        "INVENTORY_SECURITY_GROUP_IDS": "sg-1",
        "INVENTORY_ENABLE_NETWORK_ISOLATION": "true",
    }
    s = Settings.from_sources(
        {"epochs": "5", "lr": "0.01", "fail_on_rules": ["Overfit"], "bucket": None}, env
    )
    assert s.bucket == "team-bucket" and s.root == "team/x/"
    assert s.epochs == 5 and s.lr == 0.01 and s.fail_on_rules == ("Overfit",)
    assert s.subnets == ("subnet-1", "subnet-2") and s.enable_network_isolation is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"instance_count": 0}, "instance_count"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"model": "vgg"}, "model"),
        ({"rules_mode": "sometimes"}, "rules_mode"),
        ({"fail_on_rules": ["NotARule"]}, "fail_on_rules"),
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"lr": "fast"}, "lr"),
        ({"instance_type": "c5.xlarge"}, "instance_type"),
        ({"subnets": ["subnet-1"]}, "subnets"),
        ({"enable_network_isolation": "maybe"}, "enable_network_isolation"),
    ],
)
def test_invalid_values_name_their_field(params, field):
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(params, env={})
    assert info.value.field_name == field
    assert repr(field) in str(info.value)
