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
        "INVENTORY_SUBNETS": "subnet-0a1b2c3d,subnet-0a1b2c3e",
        "INVENTORY_SECURITY_GROUP_IDS": "sg-0a1b2c3d",
        "INVENTORY_OUTPUT_KMS_KEY_ID": "alias/inventory-output",
        "INVENTORY_ENABLE_NETWORK_ISOLATION": "true",
    }
    s = Settings.from_sources(
        {"epochs": "5", "lr": "0.01", "fail_on_rules": ["Overfit"], "bucket": None}, env
    )
    assert s.bucket == "team-bucket" and s.root == "team/x/"
    assert s.epochs == 5 and s.lr == 0.01 and s.fail_on_rules == ("Overfit",)
    assert s.subnets == ("subnet-0a1b2c3d", "subnet-0a1b2c3e") and s.enable_network_isolation is True
    assert s.output_kms_key_id == "alias/inventory-output"


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
        ({"subnets": ["subnet-0a1b2c3d"]}, "subnets"),  # VPC mode needs security groups too
        ({"subnets": ["vpc-0a1b2c3d"], "security_group_ids": ["sg-0a1b2c3d"]}, "subnets"),
        ({"subnets": ["subnet-0a1b2c3d"], "security_group_ids": ["0a1b2c3d"]}, "security_group_ids"),
        ({"output_kms_key_id": "my key"}, "output_kms_key_id"),
        ({"volume_kms_key_id": "arn:aws:s3:::bucket"}, "volume_kms_key_id"),
        ({"enable_network_isolation": "maybe"}, "enable_network_isolation"),
    ],
)
def test_invalid_values_name_their_field(params, field):
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(params, env={})
    assert info.value.field_name == field
    assert repr(field) in str(info.value)
