from datetime import date

import pytest

from cloudtrail_es.read.keys import index_name_for, is_log_file_key, parse_log_file_key

LOG = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/111122223333_CloudTrail_eu-west-1_20240115T0910Z_AbCd1234EfGh5678.json.gz"


def test_parses_account_region_and_day():
    name = parse_log_file_key(LOG)
    assert (name.account, name.region, name.day) == ("111122223333", "eu-west-1", date(2024, 1, 15))


INSIGHT = ("AWSLogs/o-abc123/111122223333/CloudTrail-Insight/us-east-1/2024/02/01/"
           "111122223333_CloudTrail-Insight_us-east-1_20240201T0915Z_kX3mQ9vT2bL7nR4p.json.gz")


def test_insights_files_are_loaded_into_the_same_monthly_index():
    name = parse_log_file_key(INSIGHT)
    assert (name.account, name.region, name.day) == ("111122223333", "us-east-1", date(2024, 2, 1))
    assert index_name_for(INSIGHT, "audit") == "audit-2024-02"


def test_index_name_comes_from_the_file_name_datestamp():
    assert index_name_for(LOG) == "cloudtrail-2024-01"
    assert index_name_for(LOG, "audit") == "audit-2024-01"


@pytest.mark.parametrize("key", [
    LOG,
    "AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T0910Z_x1.json.gz",
    "YOUR_ACCOUNT_ID_CloudTrail_ap-northeast-2_20220321T1240Z_ouvw4BRu84zWXTcD.json.gz",
    "logs/0000_CloudTrail_eu-west-2_20231103T0305Z_uf5IgNKBi3t8Ywwe.json",
])
def test_recognises_log_files(key):
    assert is_log_file_key(key)


@pytest.mark.parametrize("key", [
    "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/01/15/111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20240115T091000Z.json.gz",
    "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/",
    "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/notes.txt",
    "111122223333_CloudTrail_us-east-1_20241345T0910Z_abc.json.gz",
])
def test_rejects_other_objects(key):
    assert not is_log_file_key(key)
    with pytest.raises(ValueError, match="not a CloudTrail log file"):
        index_name_for(key)
