#!/usr/bin/env python3
"""Checks that the official Anthropic and OpenAI Python SDKs work against a flotilla gateway
unchanged: only `base_url` and `api_key` differ from what a user would write for the real APIs.

Usage:
    python3 tests/sdk/check_sdks.py --base-url http://127.0.0.1:PORT --key GATEWAY_KEY \
        --model family=anthropic/claude-opus-4-6 --model openai/gpt-4.1=openai/gpt-4.1

Each `--model NAME[=PROVIDER/MODEL]` is a model name to send (an agent, a chain or a
`provider/model`); with `=PROVIDER/MODEL`, every answer must say that this upstream served it
(the `x-flotilla-model` header and the response's `model`), which is how a run proves which
translation direction it exercised.

Besides the SDKs' own behaviour (which parses leniently), every response and stream event is
validated strictly against the SDK's pydantic type, so a field the SDK declares as required
but the gateway leaves out is reported, although the SDK itself would quietly hand the caller
`None` where its types promise a value.

With `--expect-stream-failure` (run while the serving upstreams cut their streams after the
first content), only the streaming calls are made, and each SDK must report the failure as its
own error (or, for Responses, `error` + `response.failed` events) instead of a truncated answer.

Prints one line per check (`ok NAME` or `FAIL NAME: REASON`) and a final `N passed, M failed`;
exits 1 if any check failed, 2 if the SDKs are not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

try:
    import anthropic
    import openai
    import pydantic
except ImportError as e:  # pragma: no cover - the message is the point
    print(
        f"FAIL import: {e}; install the SDKs with: python3 -m pip install -r tests/sdk/requirements.txt",
        flush=True,
    )
    sys.exit(2)

TIMEOUT = 60.0

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_SCHEMA,
        "strict": False,
    }
]
WEATHER_RESULT = "Sunny, 21 degrees C"


class CheckFailed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def strict(obj: Any, what: str) -> None:
    """Validates an SDK object against its declared type. The SDKs build response objects
    without validation (a missing required field just reads as None), so this is what catches
    a required field the gateway leaves out. Stream events are validated as the
    variant the SDK chose for them by their `type`."""
    data = obj.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
    try:
        type(obj).model_validate(data)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise CheckFailed(f"{what} does not match the SDK's {type(obj).__name__}: {problems}") from None


@dataclass
class Target:
    """A model name to send and, optionally, the `provider/model` that must answer it."""

    name: str
    upstream: Optional[str]

    @property
    def upstream_model(self) -> Optional[str]:
        return self.upstream.split("/", 1)[1] if self.upstream else None

    def check_served(self, headers: Any, model: str, what: str) -> None:
        if self.upstream is None:
            return
        served = headers.get("x-flotilla-model")
        expect(served == self.upstream, f"{what}: served by {served!r}, expected {self.upstream!r}")
        self.check_model(model, what)

    def check_model(self, model: str, what: str) -> None:
        if self.upstream_model is not None:
            expect(model == self.upstream_model, f"{what}: model {model!r}, expected {self.upstream_model!r}")


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CheckFailed as e:
            self.fail(name, str(e))
        except Exception as e:  # noqa: BLE001 - any SDK exception is a failed check
            detail = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " | ")
            self.fail(name, f"{detail} (at {_where(e)})")
        else:
            self.passed += 1
            print(f"ok {name}", flush=True)

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        print(f"FAIL {name}: {reason}", flush=True)


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if f.filename == __file__]
    frame = ours[-1] if ours else (tb[-1] if tb else None)
    return f"line {frame.lineno}" if frame else "?"


# ---------------------------------------------------------------------------------------------
# Anthropic SDK
# ---------------------------------------------------------------------------------------------


def anthropic_checks(r: Runner, client: anthropic.Anthropic, t: Target) -> None:
    from anthropic.types import Message, TextBlock, ToolUseBlock

    p = f"anthropic[{t.name}]"
    user = {"role": "user", "content": "What is the weather in Paris?"}

    def create_text() -> None:
        raw = client.messages.with_raw_response.create(
            model=t.name,
            max_tokens=200,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hello."}],
        )
        msg = raw.parse()
        strict(msg, "message")
        t.check_served(raw.headers, msg.model, "message")
        expect(msg.type == "message" and msg.role == "assistant", f"type/role {msg.type}/{msg.role}")
        expect(msg.id.startswith("msg_"), f"id {msg.id!r} does not start with msg_")
        expect(len(msg.content) >= 1 and isinstance(msg.content[0], TextBlock), f"content {msg.content!r}")
        expect(msg.content[0].text.strip() != "", "empty text")
        expect(msg.stop_reason == "end_turn", f"stop_reason {msg.stop_reason!r}")
        expect(msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, f"usage {msg.usage!r}")

    def create_tools() -> Message:
        msg = client.messages.create(model=t.name, max_tokens=200, tools=ANTHROPIC_TOOLS, messages=[user])
        strict(msg, "message")
        t.check_model(msg.model, "message")
        uses = [b for b in msg.content if isinstance(b, ToolUseBlock)]
        expect(len(uses) == 1, f"expected one tool_use block, got {msg.content!r}")
        expect(uses[0].name == "get_weather", f"tool name {uses[0].name!r}")
        expect(isinstance(uses[0].input, dict), f"tool input {uses[0].input!r} is not an object")
        expect(uses[0].id != "", "empty tool_use id")
        expect(msg.stop_reason == "tool_use", f"stop_reason {msg.stop_reason!r}")
        return msg

    def tool_round_trip() -> None:
        first = create_tools()
        use = next(b for b in first.content if isinstance(b, ToolUseBlock))
        # The documented pattern: the assistant's content goes back as returned by the SDK.
        msg = client.messages.create(
            model=t.name,
            max_tokens=200,
            tools=ANTHROPIC_TOOLS,
            messages=[
                user,
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": WEATHER_RESULT}],
                },
            ],
        )
        strict(msg, "message")
        expect(any(isinstance(b, TextBlock) and b.text for b in msg.content), f"no text answer: {msg.content!r}")
        expect(msg.stop_reason == "end_turn", f"stop_reason {msg.stop_reason!r}")

    def stream_helper_text() -> None:
        with client.messages.stream(
            model=t.name, max_tokens=200, messages=[{"role": "user", "content": "Tell me a story."}]
        ) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        strict(final, "final message")
        t.check_model(final.model, "final message")
        text = "".join(pieces)
        expect(len(pieces) > 1, f"expected several text deltas, got {len(pieces)}")
        expect(text != "", "no streamed text")
        final_text = "".join(b.text for b in final.content if isinstance(b, TextBlock))
        expect(final_text == text, f"final text {final_text!r} != streamed {text!r}")
        expect(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
        expect(final.usage.output_tokens > 0, f"output_tokens {final.usage.output_tokens}")
        expect(final.usage.input_tokens > 0, f"input_tokens {final.usage.input_tokens}")

    def stream_helper_tools() -> None:
        with client.messages.stream(model=t.name, max_tokens=200, tools=ANTHROPIC_TOOLS, messages=[user]) as stream:
            final = stream.get_final_message()
        strict(final, "final message")
        uses = [b for b in final.content if isinstance(b, ToolUseBlock)]
        expect(len(uses) == 1, f"expected one tool_use block, got {final.content!r}")
        expect(uses[0].name == "get_weather", f"tool name {uses[0].name!r}")
        expect(isinstance(uses[0].input, dict) and "city" in uses[0].input, f"tool input {uses[0].input!r}")
        expect(final.stop_reason == "tool_use", f"stop_reason {final.stop_reason!r}")

    def raw_stream() -> None:
        events = []
        with client.messages.create(
            model=t.name, max_tokens=200, stream=True, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            for ev in stream:
                strict(ev, f"{ev.type} event")
                events.append(ev)
        types = [e.type for e in events]
        expect(types[:2] == ["message_start", "content_block_start"], f"stream starts {types[:2]}")
        expect(types[-2:] == ["message_delta", "message_stop"], f"stream ends {types[-2:]}")
        expect(types.count("message_start") == 1, f"message_start count in {types}")
        expect("content_block_delta" in types and "content_block_stop" in types, f"events {types}")
        t.check_model(events[0].message.model, "message_start")
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
        expect(text != "", "no text deltas")
        delta = events[-2]
        expect(delta.delta.stop_reason == "end_turn", f"stop_reason {delta.delta.stop_reason!r}")
        expect(delta.usage.output_tokens > 0, f"output_tokens {delta.usage.output_tokens}")

    def raw_stream_tools() -> None:
        args = ""
        start = None
        stop_reason = None
        with client.messages.create(
            model=t.name, max_tokens=200, stream=True, tools=ANTHROPIC_TOOLS, messages=[user]
        ) as stream:
            for ev in stream:
                strict(ev, f"{ev.type} event")
                if ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                    start = ev.content_block
                elif ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
                    args += ev.delta.partial_json
                elif ev.type == "message_delta":
                    stop_reason = ev.delta.stop_reason
        expect(start is not None and start.name == "get_weather", f"tool_use block start {start!r}")
        expect(isinstance(json.loads(args), dict), f"arguments {args!r}")
        expect(stop_reason == "tool_use", f"stop_reason {stop_reason!r}")

    r.run(f"{p} messages.create text", create_text)
    r.run(f"{p} messages.create tools -> tool_use", lambda: (create_tools(), None)[1])
    r.run(f"{p} messages.create tool_result round trip", tool_round_trip)
    r.run(f"{p} messages.stream text_stream + get_final_message", stream_helper_text)
    r.run(f"{p} messages.stream tools get_final_message", stream_helper_tools)
    r.run(f"{p} messages.create stream=True events", raw_stream)
    r.run(f"{p} messages.create stream=True tool events", raw_stream_tools)


def anthropic_models(r: Runner, client: anthropic.Anthropic, agent: str) -> None:
    def models() -> None:
        page = client.models.list()
        items = list(page)
        for m in items:
            strict(m, f"model {m.id!r}")
        ids = [m.id for m in items]
        expect(agent in ids, f"{agent!r} not in {ids}")

    r.run("anthropic models.list", models)


def anthropic_errors(r: Runner, base_url: str, key: str, agent: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=TIMEOUT)
    bad = agent + "x"
    msgs = [{"role": "user", "content": "hi"}]

    def not_found() -> None:
        try:
            client.messages.create(model=bad, max_tokens=10, messages=msgs)
        except anthropic.NotFoundError as e:
            expect(e.status_code == 404, f"status {e.status_code}")
            body = e.body if isinstance(e.body, dict) else {}
            err = body.get("error", {})
            expect(err.get("type") == "not_found_error", f"error type in {body!r}")
            expect(f'unknown model "{bad}"' in err.get("message", ""), f"message in {body!r}")
            expect(f'unknown model "{bad}"' in str(e), f"str(e) = {e}")
        else:
            raise CheckFailed("no exception")

    def not_found_stream() -> None:
        try:
            with client.messages.stream(model=bad, max_tokens=10, messages=msgs) as stream:
                stream.get_final_message()
        except anthropic.NotFoundError as e:
            expect(f'unknown model "{bad}"' in str(e), f"str(e) = {e}")
        else:
            raise CheckFailed("no exception")

    def bad_key() -> None:
        wrong = anthropic.Anthropic(base_url=base_url, api_key=key + "-wrong", max_retries=0, timeout=TIMEOUT)
        try:
            wrong.messages.create(model=agent, max_tokens=10, messages=msgs)
        except anthropic.AuthenticationError as e:
            expect(e.status_code == 401, f"status {e.status_code}")
            body = e.body if isinstance(e.body, dict) else {}
            expect(body.get("error", {}).get("type") == "authentication_error", f"body {body!r}")
        else:
            raise CheckFailed("no exception")

    r.run("anthropic unknown model -> NotFoundError", not_found)
    r.run("anthropic unknown model, streaming -> NotFoundError", not_found_stream)
    r.run("anthropic bad key -> AuthenticationError", bad_key)


# ---------------------------------------------------------------------------------------------
# OpenAI SDK
# ---------------------------------------------------------------------------------------------


def openai_chat_checks(r: Runner, client: openai.OpenAI, t: Target) -> None:
    from openai.types.chat import ChatCompletion

    p = f"openai[{t.name}]"
    user = {"role": "user", "content": "What is the weather in Paris?"}

    def plain() -> None:
        raw = client.chat.completions.with_raw_response.create(
            model=t.name,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        )
        c = raw.parse()
        strict(c, "chat completion")
        t.check_served(raw.headers, c.model, "chat completion")
        expect(c.object == "chat.completion", f"object {c.object!r}")
        expect(len(c.choices) == 1, f"{len(c.choices)} choices")
        ch = c.choices[0]
        expect(ch.message.role == "assistant", f"role {ch.message.role!r}")
        expect(bool(ch.message.content), f"content {ch.message.content!r}")
        expect(ch.finish_reason == "stop", f"finish_reason {ch.finish_reason!r}")
        u = c.usage
        expect(u is not None and u.prompt_tokens > 0 and u.completion_tokens > 0, f"usage {u!r}")
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage {u!r}")

    def tools() -> ChatCompletion:
        c = client.chat.completions.create(model=t.name, messages=[user], tools=CHAT_TOOLS)
        strict(c, "chat completion")
        t.check_model(c.model, "chat completion")
        ch = c.choices[0]
        calls = ch.message.tool_calls or []
        expect(len(calls) == 1, f"tool_calls {calls!r}")
        expect(calls[0].type == "function" and calls[0].function.name == "get_weather", f"call {calls[0]!r}")
        expect(isinstance(json.loads(calls[0].function.arguments), dict), f"arguments {calls[0].function.arguments!r}")
        expect(calls[0].id != "", "empty tool call id")
        expect(ch.finish_reason == "tool_calls", f"finish_reason {ch.finish_reason!r}")
        return c

    def round_trip() -> None:
        first = tools()
        msg = first.choices[0].message
        call = (msg.tool_calls or [])[0]
        # The documented pattern: the assistant message goes back as returned by the SDK.
        c = client.chat.completions.create(
            model=t.name,
            tools=CHAT_TOOLS,
            messages=[user, msg, {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT}],
        )
        strict(c, "chat completion")
        ch = c.choices[0]
        expect(bool(ch.message.content), f"content {ch.message.content!r}")
        expect(not ch.message.tool_calls, f"unexpected tool_calls {ch.message.tool_calls!r}")
        expect(ch.finish_reason == "stop", f"finish_reason {ch.finish_reason!r}")

    def stream_text() -> None:
        text = ""
        finish = None
        usage = None
        role = None
        n = 0
        ids = set()
        for chunk in client.chat.completions.create(
            model=t.name,
            messages=[{"role": "user", "content": "Tell me a story."}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            strict(chunk, "chunk")
            expect(chunk.object == "chat.completion.chunk", f"object {chunk.object!r}")
            ids.add(chunk.id)
            n += 1
            if chunk.usage is not None:
                expect(chunk.choices == [], f"usage chunk has choices {chunk.choices!r}")
                usage = chunk.usage
            for ch in chunk.choices:
                role = ch.delta.role or role
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
            t.check_model(chunk.model, "chunk")
        expect(len(ids) == 1, f"chunk ids {ids}")
        expect(role == "assistant", f"role {role!r}")
        expect(text != "", f"no text in {n} chunks")
        expect(finish == "stop", f"finish_reason {finish!r}")
        expect(usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0, f"usage {usage!r}")

    def stream_tools() -> None:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=t.name, messages=[user], tools=CHAT_TOOLS, stream=True, stream_options={"include_usage": True}
        ):
            strict(chunk, "chunk")
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                for d in ch.delta.tool_calls or []:
                    acc = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    if d.id:
                        acc["id"] = d.id
                    if d.function and d.function.name:
                        acc["name"] += d.function.name
                    if d.function and d.function.arguments:
                        acc["arguments"] += d.function.arguments
        expect(list(calls) == [0], f"tool call indexes {list(calls)}")
        call = calls[0]
        expect(call["id"] != "" and call["name"] == "get_weather", f"call {call!r}")
        expect(isinstance(json.loads(call["arguments"]), dict), f"arguments {call['arguments']!r}")
        expect(finish == "tool_calls", f"finish_reason {finish!r}")

    def stream_helper() -> None:
        # The SDK's own accumulator (`chat.completions.stream`), which rebuilds the completion.
        with client.chat.completions.stream(model=t.name, messages=[user], tools=CHAT_TOOLS) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        ch = final.choices[0]
        calls = ch.message.tool_calls or []
        expect(len(calls) == 1 and calls[0].function.name == "get_weather", f"tool_calls {calls!r}")
        expect(isinstance(json.loads(calls[0].function.arguments), dict), f"arguments {calls[0].function.arguments!r}")
        expect(ch.finish_reason == "tool_calls", f"finish_reason {ch.finish_reason!r}")

    r.run(f"{p} chat.completions.create plain", plain)
    r.run(f"{p} chat.completions.create tools -> tool_calls", lambda: (tools(), None)[1])
    r.run(f"{p} chat.completions.create tool result round trip", round_trip)
    r.run(f"{p} chat.completions.create stream=True include_usage", stream_text)
    r.run(f"{p} chat.completions.create stream=True tool call deltas", stream_tools)
    r.run(f"{p} chat.completions.stream get_final_completion", stream_helper)


def openai_responses_checks(r: Runner, client: openai.OpenAI, t: Target) -> None:
    from openai.types.responses import Response

    p = f"openai[{t.name}]"
    question = "What is the weather in Paris?"

    def plain() -> None:
        raw = client.responses.with_raw_response.create(model=t.name, instructions="Be brief.", input="Say hello.")
        resp = raw.parse()
        strict(resp, "response")
        t.check_served(raw.headers, resp.model, "response")
        expect(resp.object == "response" and resp.status == "completed", f"object/status {resp.object}/{resp.status}")
        expect(resp.output_text != "", "empty output_text")
        u = resp.usage
        expect(u is not None and u.input_tokens > 0 and u.output_tokens > 0, f"usage {u!r}")
        expect(u.total_tokens == u.input_tokens + u.output_tokens, f"usage {u!r}")

    def tools() -> Response:
        resp = client.responses.create(model=t.name, input=question, tools=RESPONSES_TOOLS)
        strict(resp, "response")
        t.check_model(resp.model, "response")
        calls = [o for o in resp.output if o.type == "function_call"]
        expect(len(calls) == 1, f"output {resp.output!r}")
        expect(calls[0].name == "get_weather" and calls[0].call_id != "", f"call {calls[0]!r}")
        expect(isinstance(json.loads(calls[0].arguments), dict), f"arguments {calls[0].arguments!r}")
        return resp

    def round_trip() -> None:
        first = tools()
        call = next(o for o in first.output if o.type == "function_call")
        # The documented pattern: append the response's output items as the SDK returned them.
        items: list[Any] = [{"role": "user", "content": question}]
        items += first.output
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT})
        resp = client.responses.create(model=t.name, input=items, tools=RESPONSES_TOOLS)
        strict(resp, "response")
        expect(resp.status == "completed", f"status {resp.status!r}")
        expect(resp.output_text != "", f"no text answer: {resp.output!r}")

    def stream_events() -> None:
        events = []
        for ev in client.responses.create(model=t.name, input="Tell me a story.", stream=True):
            strict(ev, f"{ev.type} event")
            events.append(ev)
        types = [e.type for e in events]
        expect(types[0] == "response.created", f"first event {types[0]!r}")
        expect(types[-1] == "response.completed", f"last event {types[-1]!r}")
        seqs = [e.sequence_number for e in events]
        expect(seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"sequence numbers {seqs}")
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        expect(text != "", "no output_text deltas")
        done = [e.text for e in events if e.type == "response.output_text.done"]
        expect(done == [text], f"output_text.done {done!r} != deltas {text!r}")
        final = events[-1].response
        t.check_model(final.model, "response.completed")
        expect(final.output_text == text, f"final output_text {final.output_text!r}")
        expect(final.usage is not None and final.usage.output_tokens > 0, f"usage {final.usage!r}")

    def stream_tool_events() -> None:
        args = ""
        added = None
        final = None
        for ev in client.responses.create(model=t.name, input=question, tools=RESPONSES_TOOLS, stream=True):
            strict(ev, f"{ev.type} event")
            if ev.type == "response.output_item.added" and ev.item.type == "function_call":
                added = ev.item
            elif ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            elif ev.type == "response.completed":
                final = ev.response
        expect(added is not None and added.name == "get_weather", f"function_call item {added!r}")
        expect(isinstance(json.loads(args), dict), f"arguments {args!r}")
        expect(final is not None, "no response.completed")
        calls = [o for o in final.output if o.type == "function_call"]
        expect(len(calls) == 1 and calls[0].arguments == args, f"final output {final.output!r}")

    def stream_helper() -> None:
        # The SDK's own accumulator (`responses.stream`), which rebuilds the response from events.
        with client.responses.stream(model=t.name, input="Tell me a story.") as stream:
            text = "".join(ev.delta for ev in stream if ev.type == "response.output_text.delta")
            final = stream.get_final_response()
        expect(text != "", "no text deltas")
        expect(final.output_text == text, f"final output_text {final.output_text!r} != streamed {text!r}")
        expect(final.status == "completed", f"status {final.status!r}")

    r.run(f"{p} responses.create plain", plain)
    r.run(f"{p} responses.create tools -> function_call", lambda: (tools(), None)[1])
    r.run(f"{p} responses.create function_call_output round trip", round_trip)
    r.run(f"{p} responses.create stream=True events", stream_events)
    r.run(f"{p} responses.create stream=True function call events", stream_tool_events)
    r.run(f"{p} responses.stream get_final_response", stream_helper)


def openai_models(r: Runner, client: openai.OpenAI, agent: str) -> None:
    def models() -> None:
        items = list(client.models.list())
        for m in items:
            strict(m, f"model {m.id!r}")
        ids = [m.id for m in items]
        expect(agent in ids, f"{agent!r} not in {ids}")

    r.run("openai models.list", models)


def openai_errors(r: Runner, base_url: str, key: str, agent: str) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT)
    bad = agent + "x"
    msgs = [{"role": "user", "content": "hi"}]

    def check_not_found(e: openai.NotFoundError) -> None:
        expect(e.status_code == 404, f"status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        expect(f'unknown model "{bad}"' in str(body.get("message", "")), f"body {e.body!r}")
        expect(f'unknown model "{bad}"' in e.message, f"message {e.message!r}")

    def chat_not_found() -> None:
        try:
            client.chat.completions.create(model=bad, messages=msgs)
        except openai.NotFoundError as e:
            check_not_found(e)
        else:
            raise CheckFailed("no exception")

    def chat_stream_not_found() -> None:
        try:
            for _ in client.chat.completions.create(model=bad, messages=msgs, stream=True):
                pass
        except openai.NotFoundError as e:
            check_not_found(e)
        else:
            raise CheckFailed("no exception")

    def responses_not_found() -> None:
        try:
            client.responses.create(model=bad, input="hi")
        except openai.NotFoundError as e:
            check_not_found(e)
        else:
            raise CheckFailed("no exception")

    def bad_key() -> None:
        wrong = openai.OpenAI(base_url=base_url + "/v1", api_key=key + "-wrong", max_retries=0, timeout=TIMEOUT)
        for call in (
            lambda: wrong.chat.completions.create(model=agent, messages=msgs),
            lambda: wrong.responses.create(model=agent, input="hi"),
        ):
            try:
                call()
            except openai.AuthenticationError as e:
                expect(e.status_code == 401, f"status {e.status_code}")
                body = e.body if isinstance(e.body, dict) else {}
                expect(body.get("code") == "invalid_api_key", f"body {e.body!r}")
            else:
                raise CheckFailed("no exception")

    r.run("openai chat unknown model -> NotFoundError", chat_not_found)
    r.run("openai chat unknown model, streaming -> NotFoundError", chat_stream_not_found)
    r.run("openai responses unknown model -> NotFoundError", responses_not_found)
    r.run("openai bad key -> AuthenticationError", bad_key)


# ---------------------------------------------------------------------------------------------
# Streams that fail after content was sent (run with --expect-stream-failure while the serving
# upstream cuts its streams): the gateway cannot fail over any more, so each SDK must surface a
# clean error of its own kind instead of a silently truncated answer or a hang.
# ---------------------------------------------------------------------------------------------


def stream_failure_checks(r: Runner, ant: anthropic.Anthropic, oai: openai.OpenAI, t: Target) -> None:
    msgs = [{"role": "user", "content": "Tell me a story."}]

    def anthropic_raw() -> None:
        seen = []
        try:
            with ant.messages.create(model=t.name, max_tokens=200, stream=True, messages=msgs) as stream:
                for ev in stream:
                    seen.append(ev.type)
        except anthropic.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            expect(body.get("type") == "error" and "message" in body.get("error", {}), f"error body {e.body!r}")
        else:
            raise CheckFailed(f"the stream ended without an error: {seen}")
        expect("content_block_delta" in seen, f"the failure came before any content: {seen}")
        expect("message_stop" not in seen, f"message_stop before the error: {seen}")

    def anthropic_helper() -> None:
        text = []
        try:
            with ant.messages.stream(model=t.name, max_tokens=200, messages=msgs) as stream:
                for piece in stream.text_stream:
                    text.append(piece)
                stream.get_final_message()
        except anthropic.APIStatusError:
            pass
        else:
            raise CheckFailed("get_final_message returned without an error")
        expect(text != [], "the failure came before any text")

    def chat() -> None:
        text = ""
        try:
            for chunk in oai.chat.completions.create(model=t.name, messages=msgs, stream=True):
                for ch in chunk.choices:
                    text += ch.delta.content or ""
                    expect(ch.finish_reason is None, f"finish_reason {ch.finish_reason!r} before the error")
        except openai.APIError as e:
            expect(e.message != "", "empty error message")
        else:
            raise CheckFailed("the stream ended without an error")
        expect(text != "", "the failure came before any text")

    def chat_helper() -> None:
        try:
            with oai.chat.completions.stream(model=t.name, messages=msgs) as stream:
                for _ in stream:
                    pass
                stream.get_final_completion()
        except openai.APIError:
            pass
        else:
            raise CheckFailed("get_final_completion returned without an error")

    def responses() -> None:
        events = []
        for ev in oai.responses.create(model=t.name, input="Tell me a story.", stream=True):
            strict(ev, f"{ev.type} event")
            events.append(ev)
        types = [e.type for e in events]
        expect("response.output_text.delta" in types, f"the failure came before any text: {types}")
        expect(types[-2:] == ["error", "response.failed"], f"stream ends {types[-2:]}")
        expect("response.completed" not in types, f"response.completed in {types}")
        failed = events[-1].response
        expect(failed.status == "failed" and failed.error is not None, f"failed response {failed!r}")
        expect(failed.error.message == events[-2].message, "error event and response.failed disagree")

    p = f"stream failure[{t.name}]"
    r.run(f"{p} anthropic messages.create stream=True raises APIStatusError", anthropic_raw)
    r.run(f"{p} anthropic messages.stream raises APIStatusError", anthropic_helper)
    r.run(f"{p} openai chat stream raises APIError", chat)
    r.run(f"{p} openai chat.completions.stream raises APIError", chat_helper)
    r.run(f"{p} openai responses stream ends with error + response.failed", responses)


# ---------------------------------------------------------------------------------------------


def parse_target(s: str) -> Target:
    name, _, upstream = s.partition("=")
    if upstream and "/" not in upstream:
        raise argparse.ArgumentTypeError(f"{s!r}: the upstream must be written provider/model")
    return Target(name=name, upstream=upstream or None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", required=True, help="a client key of the gateway ([gateway].keys)")
    ap.add_argument(
        "--model",
        action="append",
        type=parse_target,
        required=True,
        help="NAME[=PROVIDER/MODEL]: a model name to test, and the upstream that must serve it (repeatable); "
        "the first one must be an agent, used for models.list and the error checks",
    )
    ap.add_argument(
        "--expect-stream-failure",
        action="store_true",
        help="the serving upstream cuts its streams: check only that every SDK reports the failure cleanly",
    )
    args = ap.parse_args()
    base_url = args.base_url.rstrip("/")
    agent = args.model[0].name

    print(f"# anthropic {anthropic.__version__}, openai {openai.__version__}, gateway {base_url}", flush=True)
    r = Runner()
    # Only base_url and api_key differ from a client of the real APIs. Retries are off so a
    # failure the SDK would paper over by retrying is seen.
    ant = anthropic.Anthropic(base_url=base_url, api_key=args.key, max_retries=0, timeout=TIMEOUT)
    oai = openai.OpenAI(base_url=base_url + "/v1", api_key=args.key, max_retries=0, timeout=TIMEOUT)
    if args.expect_stream_failure:
        for t in args.model:
            stream_failure_checks(r, ant, oai, t)
        print(f"{r.passed} passed, {r.failed} failed", flush=True)
        return 1 if r.failed else 0
    for t in args.model:
        anthropic_checks(r, ant, t)
        openai_chat_checks(r, oai, t)
        openai_responses_checks(r, oai, t)
    anthropic_models(r, ant, agent)
    openai_models(r, oai, agent)
    anthropic_errors(r, base_url, args.key, agent)
    openai_errors(r, base_url, args.key, agent)
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
