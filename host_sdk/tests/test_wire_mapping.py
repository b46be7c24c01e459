"""Wire-to-model edge cases that a well-behaved fake never sends: malformed names, unknown values, missing fields."""

from __future__ import annotations

import json

import pytest
from sdk_fakes import blurry_report, stamp

from veriscope.sdk import ProtocolError, ScanState
from veriscope.sdk._cli_output import to_json
from veriscope.sdk._convert import quality_issue_from_pb, scan_explanation_from_pb, scan_from_pb, scan_id_from_name
from veriscope.v1 import common_pb2, scan_service_pb2


def _scan(**fields: object) -> scan_service_pb2.Scan:
    base: dict[str, object] = {"name": "scans/s1", "item_type": "tote-classic", "create_time": stamp()}
    base.update(fields)
    return scan_service_pb2.Scan(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "scans/", "s1", "scans/a/b", "models/s1"])
def test_malformed_scan_names_are_protocol_errors(name: str) -> None:
    with pytest.raises(ProtocolError, match="scans/"):
        scan_id_from_name(name)


def _explanation(name: str = "scans/s1/explanation", **image: object) -> scan_service_pb2.GetScanExplanationResponse:
    fields: dict[str, object] = {
        "image_id": "001",
        "grid_rows": 1,
        "grid_cols": 2,
        "tile_scores": [0.2, 0.9],
        "tile_familiarity": [1.0, 1.0],
        "column_x_px": [0, 10],
        "row_y_px": [0],
    }
    fields.update(image)
    explanation = scan_service_pb2.ScanExplanation(
        name=name,
        images=[scan_service_pb2.ImageExplanation(**fields)],  # type: ignore[arg-type]
    )
    return scan_service_pb2.GetScanExplanationResponse(explanation=explanation)


def test_explanations_whose_tile_grids_do_not_add_up_are_protocol_errors() -> None:
    (row,) = scan_explanation_from_pb(_explanation()).images[0].tile_scores
    assert row == pytest.approx((0.2, 0.9))
    for name in ["scans/s1", "scans/s1/explanations", "s1/explanation", "scans/a/b/explanation"]:
        with pytest.raises(ProtocolError, match=r"explanation|scans/"):
            scan_explanation_from_pb(_explanation(name))
    with pytest.raises(ProtocolError, match="3 tile scores for image '001' for a 1x2 tile grid"):
        scan_explanation_from_pb(_explanation(tile_scores=[0.1, 0.2, 0.3]))
    with pytest.raises(ProtocolError, match="tile familiarity"):
        scan_explanation_from_pb(_explanation(tile_familiarity=[]))
    with pytest.raises(ProtocolError, match="tile positions"):
        scan_explanation_from_pb(_explanation(column_x_px=[0]))
    with pytest.raises(ProtocolError, match="0 tile scores"):
        scan_explanation_from_pb(_explanation(grid_rows=0, tile_scores=[], tile_familiarity=[], row_y_px=[]))


def test_a_scan_without_create_time_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="create_time") as caught:
        scan_from_pb(scan_service_pb2.Scan(name="scans/s1"))
    assert caught.value.code == "PROTOCOL_ERROR"


def test_unknown_states_map_to_unspecified_but_unknown_verdicts_fail() -> None:
    assert scan_from_pb(_scan(state=42)).state is ScanState.UNSPECIFIED
    with pytest.raises(ProtocolError, match="verdict"):
        scan_from_pb(_scan(result=scan_service_pb2.ScanResult(verdict=9)))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="reason"):
        scan_from_pb(_scan(result=scan_service_pb2.ScanResult(verdict=2, reason=17)))  # type: ignore[arg-type]


def test_a_scan_without_a_verdict_has_no_result() -> None:
    scan = scan_from_pb(_scan(result=scan_service_pb2.ScanResult(score=0.5)))
    assert scan.result is None and scan.verdict is None


def test_issue_codes_fall_back_to_the_kind() -> None:
    assert quality_issue_from_pb(common_pb2.QualityIssue(kind=common_pb2.QUALITY_ISSUE_KIND_GLARE)).code == "glare"
    assert quality_issue_from_pb(common_pb2.QualityIssue(kind=77)).code == "unknown"  # type: ignore[arg-type]
    issue = common_pb2.QualityIssue(kind=common_pb2.QUALITY_ISSUE_KIND_OUT_OF_FOCUS, code="custom_check")
    assert quality_issue_from_pb(issue).code == "custom_check"


def test_json_output_is_strict() -> None:
    report = blurry_report()
    report.metrics.add(name="noise", value=float("nan"))
    scan = scan_from_pb(
        _scan(
            images=[
                scan_service_pb2.ScanImage(name="scans/s1/images/i1", image_id="i1", region="canvas", quality=report)
            ]
        )
    )
    decoded = json.loads(to_json(scan.to_dict()))  # would fail on a bare NaN
    assert decoded["images"][0]["quality"]["metrics"] == {"sharpness": 41.0, "noise": None}
    assert decoded["images"][0]["quality"]["issues"] == ["out_of_focus"]
    assert decoded["images"][0]["metadata"] is None and decoded["partner_item_id"] is None
