"""The step schema and the queue, without HTTP (the routes are in test_app.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mockserver.scenario import (
    MAX_TIMES,
    NO_BODY,
    STEP_KEYS,
    Scenario,
    ScenarioError,
    Step,
    parse_scenario,
    parse_step,
)


def test_defaults() -> None:
    step = parse_step({})
    assert step == Step()
    assert (step.route, step.times, step.delay_ms, step.body) == ("tts", 1, 0.0, NO_BODY)
    assert not step.is_error


def test_every_key() -> None:
    data: dict[str, Any] = {
        "route": "tts",
        "status": 503,
        "headers": {"X-Upstream": "a"},
        "body": {"custom": True},
        "message": "down",
        "shape": "url-string",
        "audio_url": "https://cdn.example/x.mp3",
        "audio_format": "opus",
        "delay_ms": 12.5,
        "latency": "300ms+4ms/char",
        "times": 3,
        "fault": "slow-body",
    }
    # The keys only the CDN's downloads take, and those of the ``cut`` fault.
    audio: dict[str, Any] = {
        "route": "audio",
        "fault": "cut",
        "cut_after": 4096,
        "ignore_range": True,
        "times": 2,
    }
    assert sorted(set(data) | set(audio)) == sorted(STEP_KEYS)
    step = parse_step(data)
    assert step.headers == {"x-upstream": "a"}  # names are case-insensitive: kept lower-case
    assert step.is_error
    assert step.to_json() == {**data, "headers": {"x-upstream": "a"}}
    cut = parse_step(audio)
    assert (cut.fault, cut.cut_after, cut.ignore_range) == ("cut", 4096, True)
    assert cut.to_json() == audio


def test_body_may_be_any_json_value_including_null() -> None:
    assert parse_step({"body": None}).body is None
    assert parse_step({"body": "raw text"}).body == "raw text"
    assert "body" not in parse_step({}).to_json()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (
            {"fault": "boom"},
            "steps[0].fault: expected one of reset, garbage, slow-body, truncated, cut",
        ),
        ({"fault": "cut", "cut_after": -1}, "steps[0].cut_after: expected a whole number"),
        ({"fault": "cut", "cut_after": 1.5}, "steps[0].cut_after"),
        ({"fault": "truncated", "cut_after": 10}, "applies to fault 'cut' only"),
        ({"cut_after": 10}, "applies to fault 'cut' only"),
        ({"route": "audio", "ignore_range": 1}, "steps[0].ignore_range: expected true or false"),
        ({"ignore_range": True}, "'ignore_range' applies to route 'audio' only"),
        ({"route": "cdn"}, "steps[0].route: expected one of tts, audio, received 'cdn'"),
        ({"shape": "xml"}, "steps[0].shape: expected one of url-object"),
        ({"audio_format": "ogg"}, "steps[0].audio_format: expected one of mp3"),
        ({"status": 199}, "steps[0].status: expected an integer 200..599"),
        ({"status": 600}, "steps[0].status"),
        ({"status": "500"}, "steps[0].status"),
        ({"status": True}, "steps[0].status"),
        ({"times": 0}, "steps[0].times"),
        ({"times": MAX_TIMES + 1}, "steps[0].times"),
        ({"times": 1.5}, "steps[0].times"),
        ({"delay_ms": -1}, "steps[0].delay_ms"),
        ({"delay_ms": "5"}, "steps[0].delay_ms"),
        ({"delay_ms": 10**9}, "steps[0].delay_ms"),
        ({"headers": ["x"]}, "steps[0].headers"),
        ({"headers": {"bad name": "x"}}, "invalid header"),
        ({"headers": {"x": "a\r\nb"}}, "invalid header"),
        ({"headers": {"x": 1}}, "invalid header"),
        ({"headers": {"Content-Length": "9"}}, "cannot be set"),
        ({"message": 5}, "steps[0].message: expected a string"),
        ({"audio_url": 5}, "steps[0].audio_url"),
        ({"route": "audio", "shape": "binary"}, "apply to route 'tts' only"),
        ({"route": "audio", "audio_url": "x"}, "apply to route 'tts' only"),
        ({"fault": "junk-tail"}, "steps[0].fault: 'junk-tail' applies to route 'audio' only"),
        ({"fault": "signature-junk"}, "applies to route 'audio' only"),
        ({"stauts": 500}, "unknown key(s) 'stauts'"),
        ("reset", "expected an object"),
    ],
)
def test_bad_steps_are_rejected_clearly(data: Any, complaint: str) -> None:
    with pytest.raises(ScenarioError, match=None) as info:
        parse_step(data, "steps[0]")
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    "payload", [[], {"step": []}, {"steps": [], "extra": 1}, {"steps": {}}, None]
)
def test_scenario_document_shape(payload: Any) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(payload)


def test_scenario_document_names_the_bad_step() -> None:
    with pytest.raises(ScenarioError, match=r"^steps\[1\]\.fault"):
        parse_scenario({"steps": [{}, {"fault": "nope"}]})


class TestQueue:
    def test_empty_queue_gives_nothing(self) -> None:
        assert Scenario().take("tts") is None

    def test_steps_are_taken_in_order(self) -> None:
        scenario = Scenario()
        scenario.push([{"status": 500}, {"status": 502}, {"status": 503}])
        assert [scenario.take("tts").status for _ in range(3)] == [500, 502, 503]  # type: ignore[union-attr]
        assert scenario.take("tts") is None

    def test_times_repeats_a_step(self) -> None:
        scenario = Scenario()
        scenario.push([{"status": 500, "times": 2}, {"status": 201}])
        taken = [scenario.take("tts") for _ in range(4)]
        assert [s.status if s else None for s in taken] == [500, 500, 201, None]

    def test_routes_do_not_block_each_other(self) -> None:
        scenario = Scenario()
        scenario.push([{"route": "audio", "fault": "reset"}, {"status": 429}])
        tts = scenario.take("tts")
        assert tts is not None
        assert tts.status == 429
        assert scenario.take("tts") is None
        audio = scenario.take("audio")
        assert audio is not None
        assert audio.fault == "reset"

    def test_pending_shows_remaining_times(self) -> None:
        scenario = Scenario()
        scenario.push([Step(status=500, times=3)])
        scenario.take("tts")
        assert [s.times for s in scenario.pending()] == [2]

    def test_push_is_all_or_nothing(self) -> None:
        scenario = Scenario()
        with pytest.raises(ScenarioError):
            scenario.push([{"status": 500}, {"fault": "nope"}])
        assert len(scenario) == 0

    def test_queue_is_bounded(self) -> None:
        scenario = Scenario(max_steps=3)
        assert scenario.push([{}, {}]) == 2
        with pytest.raises(ScenarioError, match="too many steps"):
            scenario.push([{}, {}])
        assert len(scenario) == 2

    def test_clear(self) -> None:
        scenario = Scenario()
        scenario.push([{}])
        scenario.clear()
        assert scenario.take("tts") is None

    def test_concurrent_takes_use_each_step_once(self) -> None:
        scenario = Scenario()
        scenario.push([{"status": 500, "times": 1000}])
        taken: list[Step | None] = []

        def worker() -> None:
            for _ in range(300):
                taken.append(scenario.take("tts"))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(step is not None for step in taken) == 1000
