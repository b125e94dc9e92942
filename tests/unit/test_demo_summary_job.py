"""build/demo/summary.json's `job`: DescribeTrainingJob's isolation, Spot, checkpoint and time fields."""

from inventory_pipeline.demo.summary import build_summary
from inventory_pipeline.reports.job_facts import FIELDS, job_facts

FINAL = {
    "TrainingJobName": "inventory-run-1",
    "TrainingJobStatus": "Completed",
    "EnableNetworkIsolation": True,
    "EnableManagedSpotTraining": True,
    "CheckpointConfig": {"S3Uri": "s3://b/abid/training-jobs/j/checkpoints"},
    "TrainingTimeInSeconds": 40,
    "BillableTimeInSeconds": 30,
}


def test_the_summary_shows_the_final_description_of_the_job():
    run = {
        "xcom": {
            "train": {"Training": {"TrainingJobName": "inventory-run-1", "EnableNetworkIsolation": True}},
            "parse_rule_reports": {"job": "inventory-run-1", "job_facts": job_facts(FINAL)},
        }
    }
    job = build_summary(run)["job"]
    assert {field: job[field] for field in FIELDS} == {field: FINAL[field] for field in FIELDS}
    assert job["spot_savings"] == 0.25


def test_without_a_report_the_train_tasks_description_stands_in():
    job = build_summary({"xcom": {"train": {"Training": {"EnableNetworkIsolation": True}}}})["job"]
    assert job["EnableNetworkIsolation"] is True and job["TrainingTimeInSeconds"] is None
