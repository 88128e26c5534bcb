"""template.yaml's CORS rule on the datasets bucket, applied to a moto bucket: a page of an
``UploadCorsOrigins`` origin may PUT to a presigned URL and read the part's ETag; any other
origin is refused, and with the default (no origins) there is no rule at all (moto's server
answers any origin on a bucket without one, so that part is checked on the template alone)."""

from __future__ import annotations

from typing import Any

import boto3
import requests

from tests.infra.test_events import template

ORIGIN = "https://ui.example.com"


def datasets_cors() -> list[Any]:
    """The DatasetsBucket's CorsConfiguration as written: [condition, rules, AWS::NoValue]."""
    return template()["Resources"]["DatasetsBucket"]["Properties"]["CorsConfiguration"]


def s3_rules(origins: list[str]) -> list[dict[str, Any]]:
    """The template's rules with ``origins`` as UploadCorsOrigins, in S3 API terms."""
    rules = []
    for rule in datasets_cors()[1]["CorsRules"]:
        assert rule["AllowedOrigins"] == "UploadCorsOrigins"  # the parameter, nothing else
        rules.append({"ID": rule["Id"], "AllowedMethods": rule["AllowedMethods"],
                      "AllowedOrigins": origins, "AllowedHeaders": rule["AllowedHeaders"],
                      "ExposeHeaders": rule["ExposedHeaders"], "MaxAgeSeconds": rule["MaxAge"]})
    return rules


def test_no_origins_by_default_means_no_rule() -> None:
    doc = template()
    assert doc["Parameters"]["UploadCorsOrigins"]["Default"] == ""
    condition, _, otherwise = datasets_cors()
    assert condition == "HasUploadCorsOrigins" and otherwise == "AWS::NoValue"
    assert "UploadCorsOrigins" in str(doc["Conditions"][condition])


def test_a_page_of_an_allowed_origin_may_put_to_a_presigned_url(aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="cors")
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
                 "Access-Control-Request-Headers": "content-type"}
    s3.put_bucket_cors(Bucket="cors", CORSConfiguration={"CORSRules": s3_rules([ORIGIN])})
    allowed = requests.options(f"{aws}/cors/_uploads/x", headers=preflight, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Methods"] == "PUT"
    other = requests.options(f"{aws}/cors/_uploads/x",
                             headers={**preflight, "Origin": "https://evil.example.com"}, timeout=10)
    assert other.status_code == 403

    url = s3.generate_presigned_url("put_object", Params={"Bucket": "cors", "Key": "_uploads/x"},
                                    ExpiresIn=60)
    put = requests.put(url, data=b"a,b\n1,2\n", timeout=10,
                       headers={"Origin": ORIGIN, "Content-Type": "application/octet-stream"})
    assert put.status_code == 200
    assert put.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert put.headers["Access-Control-Expose-Headers"] == "ETag" and put.headers["ETag"]
