"""The pytest plugin as a user meets it: fixtures, the marker, scope and reset."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_the_readme_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import openai

        def test_my_app_speaks(tts_shim):
            client = openai.OpenAI(base_url=tts_shim.base_url, api_key="test")
            audio = client.audio.speech.create(model="tts-1-hd", voice="coral", input="Hi")
            assert tts_shim.upstream.requests[-1]["json"]["text"] == "Hi"
            assert audio.content
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_the_handles_expose_urls_journal_and_downloads(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx, openai

        def test_handles(tts_shim, tts_mock):
            assert tts_shim.upstream is tts_mock
            assert tts_shim.base_url == tts_shim.url + "/v1"
            assert tts_mock.url.startswith("http://127.0.0.1:")
            with openai.OpenAI(base_url=tts_shim.base_url, api_key="sk-user-9876") as c:
                c.audio.speech.create(model="tts-1", voice="nova", input="Hello")
            (call,) = tts_mock.requests
            (download,) = tts_mock.downloads
            assert [e["route"] for e in tts_mock.journal] == ["tts", "audio"]
            assert call["headers"]["authorization"] == "Bearer ****9876"
            assert call["json"] == {"model": "openai/tts-1", "text": "Hello", "voice": "nova",
                                    "response_format": "mp3"}
            assert download["status"] == 200

        def test_the_mock_answers_directly(tts_mock):
            r = httpx.post(tts_mock.url + "/v1/tts", json={"model": "openai/tts-1", "text": "x"},
                           headers={"authorization": "Bearer k"})
            assert r.status_code == 201
            assert len(tts_mock.requests) == 1
        """
    )

    pytester.runpytest().assert_outcomes(passed=2)


def test_servers_start_once_and_every_test_starts_clean(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import openai

        URLS = set()

        def speak(shim):
            with openai.OpenAI(base_url=shim.base_url, api_key="k", max_retries=0) as c:
                return c.audio.speech.create(model="tts-1", voice="nova", input="Hi")

        def test_leaves_a_step_queued_and_requests_behind(tts_shim):
            URLS.add(tts_shim.url)
            speak(tts_shim)
            tts_shim.upstream.scenario([{"status": 503, "times": 5}])
            assert len(tts_shim.upstream.journal) == 2

        def test_sees_neither(tts_shim):
            URLS.add(tts_shim.url)
            assert tts_shim.upstream.journal == []
            speak(tts_shim)  # would raise InternalServerError if the 503s were still queued

        def test_the_same_servers_served_both():
            assert len(URLS) == 1
        """
    )

    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=3)


def test_the_marker_queues_steps_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import openai, pytest

        def client(shim):
            return openai.OpenAI(base_url=shim.base_url, api_key="k", max_retries=0)

        @pytest.mark.tts_mock(steps=[{"status": 429, "times": 2}])
        def test_rate_limited(tts_shim):
            with pytest.raises(openai.RateLimitError):
                client(tts_shim).audio.speech.create(model="tts-1", voice="nova", input="Hi")
            # The second step stays queued: the plugin's shim does not wait out the
            # mock's Retry-After: 1, so the first 429 reached the client.
            assert [e["status"] for e in tts_shim.upstream.requests] == [429]

        @pytest.mark.tts_mock([{"route": "audio", "status": 404, "times": 3}])
        def test_positional_steps(tts_shim):
            with pytest.raises(openai.InternalServerError) as caught:
                client(tts_shim).audio.speech.create(model="tts-1", voice="nova", input="Hi")
            assert caught.value.code == "audio_download_failed"

        @pytest.mark.tts_mock(steps={"status": 403})
        def test_one_step_as_a_dict(tts_shim):
            with pytest.raises(openai.PermissionDeniedError):
                client(tts_shim).audio.speech.create(model="tts-1", voice="nova", input="Hi")

        def test_unmarked_succeeds(tts_shim):
            client(tts_shim).audio.speech.create(model="tts-1", voice="nova", input="Hi")
        """
    )

    pytester.runpytest().assert_outcomes(passed=4)


def test_the_marker_shape_applies_to_every_generation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import openai, pytest

        @pytest.mark.tts_mock(shape="url-string")
        def test_current_document_shape(tts_shim):
            with openai.OpenAI(base_url=tts_shim.base_url, api_key="k") as c:
                for _ in range(3):
                    c.audio.speech.create(model="tts-1", voice="nova", input="Hi")
            assert [e["status"] for e in tts_shim.upstream.requests] == [200, 200, 200]

        @pytest.mark.tts_mock(steps=[{"status": 503}], shape="metadata-only")
        def test_steps_first_then_the_shape(tts_shim):
            c = openai.OpenAI(base_url=tts_shim.base_url, api_key="k", max_retries=0)
            with pytest.raises(openai.InternalServerError) as caught:
                c.audio.speech.create(model="tts-1", voice="nova", input="Hi")
            assert caught.value.code == "no_audio_in_reply"
            assert [e["status"] for e in tts_shim.upstream.requests] == [503, 201]
        """
    )

    pytester.runpytest().assert_outcomes(passed=2)


def test_bad_marker_arguments_fail_at_setup_with_a_clear_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tts_mock(step=[{"status": 429}])
        def test_misspelt(tts_mock): pass

        @pytest.mark.tts_mock(steps="429")
        def test_not_a_list(tts_mock): pass

        @pytest.mark.tts_mock(steps=[{"status": 99}])
        def test_bad_status(tts_mock): pass

        @pytest.mark.tts_mock(steps=[{"fault": "explode"}])
        def test_bad_fault(tts_shim): pass

        @pytest.mark.tts_mock(shape="mp3")
        def test_bad_shape(tts_mock): pass

        @pytest.mark.tts_mock([{"status": 429}], steps=[])
        def test_steps_twice(tts_mock): pass

        @pytest.mark.tts_mock(steps=[{"status": 429}])
        def test_no_fixture(): pass
        """
    )

    result = pytester.runpytest()

    result.assert_outcomes(errors=7)
    result.stdout.fnmatch_lines_random(
        [
            "*tts_mock: unknown argument(s) step; expected steps=[[]...[]] and/or shape=...",
            "*tts_mock: steps must be a list of step dicts, got str",
            "*tts_mock: steps[[]0[]].status: expected an integer 200..599, received 99",
            "*tts_mock: steps[[]0[]].fault: expected one of reset, garbage, *, received 'explode'",
            "*tts_mock: shape must be one of url-object, *, got 'mp3'",
            "*tts_mock: give the steps once*",
            "*tts_mock has no effect here: the test uses none of the fixtures*",
        ]
    )


def test_tts_shim_factory_starts_a_shim_with_other_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import openai

        def test_server_key(tts_shim_factory, tts_mock):
            shim = tts_shim_factory(upstream_key="aiml-server-key-4242", tts_retries=0)
            with openai.OpenAI(base_url=shim.base_url, api_key="client") as c:
                c.audio.speech.create(model="tts-1", voice="nova", input="Hi")
            assert shim.upstream is tts_mock
            assert shim.config.tts_retries == 0
            assert tts_mock.requests[-1]["headers"]["authorization"] == "Bearer ****4242"
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_the_plugin_registers_the_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")

    result.stdout.fnmatch_lines(["@pytest.mark.tts_mock(steps=[[]...[]], shape=None): *"])


def test_the_plugin_can_be_disabled_by_its_entry_point_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(tts_shim): pass")

    result = pytester.runpytest("-p", "no:tts_shim")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'tts_shim' not found*"])


def test_loading_the_plugin_imports_none_of_the_servers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A project that has tts-shim installed but never uses the fixtures pays ~nothing.
    # Other plugins are kept out (they may import httpx themselves); ours is loaded by
    # its entry point name.
    pytester.makepyfile(
        """
        import sys

        def test_only_the_plugin_and_its_light_helpers_were_imported(request):
            assert request.config.pluginmanager.has_plugin("tts_shim")
            loaded = {name.split(".")[0] for name in sys.modules}
            assert loaded.isdisjoint({"mockserver", "starlette", "uvicorn", "httpx", "av",
                                      "numpy", "respx", "anyio", "aiohttp"})
            assert sorted(m for m in sys.modules if m.startswith("shim")) == [
                "shim", "shim.plugin", "shim.testing"]
        """
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    result = pytester.runpytest_subprocess("-p", "tts_shim", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_the_test_shim_guards_request_heads_as_tts_shim_serve_does(
    pytester: pytest.Pytester,
) -> None:
    # A user's test that checks how their client copes with a refused head sees what
    # production answers: the 64 KiB cap and the head timeout are the served shim's own.
    pytester.makepyfile(
        """
        import socket, time

        def test_a_head_over_the_cap_is_refused(tts_shim):
            r = __import__("httpx").get(tts_shim.url + "/healthz",
                                       headers={"x-big": "a" * (70 * 1024)})
            assert r.status_code == 400

        def test_a_silent_connection_is_closed_after_the_head_timeout(tts_shim_factory):
            shim = tts_shim_factory(head_timeout=0.5)
            host, port = shim.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                started = time.monotonic()
                assert sock.recv(1) == b""  # closed by the shim, not by our timeout
            assert time.monotonic() - started < 4
        """
    )

    pytester.runpytest().assert_outcomes(passed=2)
