"""The README's "Chat features" lines for presence, typing and the auth
frame, against the real binaries: two people with the websockets library
(what wscat does by hand), curl's GET /room/{roomID}/online, and a gRPC
stream that sees the same presence and typing."""

import asyncio
import json
import uuid

import grpc
import requests
import websockets

from test_live import user


async def frame(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def frame_of(ws, kind):
    """The next frame of `kind`, passing over the others."""
    while True:
        got = await frame(ws)
        if got["Type"] == kind:
            return got


def uid_of(stack, token):
    return requests.get(f"{stack.base}/profile", headers={"Authorization": token}).json()["UID"]


def two_in_a_room(stack, tag):
    """Two new users' tokens and the room of the first, which the second joined."""
    token1, token2 = user(stack, f"one_{tag}"), user(stack, f"two_{tag}")
    room = requests.post(
        f"{stack.base}/create-room", headers={"Authorization": token1}, json={"Name": f"room {tag}"}
    ).json()["RoomID"]
    requests.put(f"{stack.base}/join", headers={"Authorization": token2}, json={"RoomID": room})
    return token1, token2, room


def test_presence_typing_and_a_fresh_token_as_the_readme_shows(stack, chat):
    pb, rpc = chat
    tag = uuid.uuid4().hex[:6]
    token1, token2, room = two_in_a_room(stack, tag)
    uid1, uid2 = uid_of(stack, token1), uid_of(stack, token2)
    channel = grpc.insecure_channel(stack.grpc)
    messages = rpc.MessageServiceStub(channel)

    async def session():
        async with websockets.connect(f"{stack.ws}?token={token1}") as one:
            assert await frame(one) == {"Type": "enter", "RoomID": 0}
            await one.send(json.dumps({"Type": "enter", "RoomID": room}))
            assert await frame(one) == {"Type": "enter", "RoomID": room}
            assert await frame(one) == {"Type": "online", "RoomID": room, "Online": [uid1]}
            online = requests.get(f"{stack.base}/room/{room}/online", headers={"Authorization": token1})
            assert (online.status_code, online.json()) == (200, {"Online": [uid1]})

            async with websockets.connect(f"{stack.ws}?token={token2}") as two:
                await frame(two)
                await two.send(json.dumps({"Type": "enter", "RoomID": room}))
                assert await frame_of(two, "online") == {"Type": "online", "RoomID": room, "Online": [uid1, uid2]}
                assert await frame_of(one, "presence") == {"Type": "presence", "RoomID": room, "UID": uid2, "Online": True}

                await two.send(json.dumps({"Type": "typing"}))
                assert await frame_of(one, "typing") == {"Type": "typing", "RoomID": room, "UID": uid2}
                # The gRPC Typing call reaches the sockets too.
                messages.Typing(pb.TypingRequest(room_id=room), metadata=[("authorization", f"Bearer {token1}")])
                assert await frame_of(two, "typing") == {"Type": "typing", "RoomID": room, "UID": uid1}

                fresh = requests.put(
                    f"{stack.base}/login", json={"Email": f"one_{tag}@example.com", "Password": "password"}
                ).json()
                await one.send(json.dumps({"Type": "auth", "Token": fresh["token"]}))
                answer = await frame_of(one, "auth")
                assert answer == {"Type": "auth", "ExpiresAt": answer["ExpiresAt"]} and answer["ExpiresAt"].endswith("Z")
                await one.send(json.dumps({"Type": "auth", "Token": token2}))
                assert await frame_of(one, "error") == {"Type": "error", "Error": "invalid token"}
            # Two's last socket closed.
            assert await frame_of(one, "presence") == {"Type": "presence", "RoomID": room, "UID": uid2, "Online": False}

    asyncio.run(session())
    channel.close()


def test_a_stream_sees_presence_and_typing_but_not_its_own(stack, chat):
    pb, rpc = chat
    token1, token2, room = two_in_a_room(stack, uuid.uuid4().hex[:6])
    uid2 = uid_of(stack, token2)
    channel = grpc.insecure_channel(stack.grpc)
    messages = rpc.MessageServiceStub(channel)
    auth1 = [("authorization", f"Bearer {token1}")]
    stream = messages.Subscribe(pb.SubscribeRequest(room_id=room), metadata=auth1, timeout=20)
    stream.initial_metadata()
    messages.Typing(pb.TypingRequest(room_id=room), metadata=auth1)

    async def second_member():
        async with websockets.connect(f"{stack.ws}?token={token2}") as two:
            await frame(two)
            await two.send(json.dumps({"Type": "enter", "RoomID": room}))
            await frame_of(two, "online")
            await two.send(json.dumps({"Type": "typing"}))
            await asyncio.sleep(0.5)

    asyncio.run(second_member())
    seen = [(e.kind, e.uid, e.online) for e in (next(stream), next(stream), next(stream))]
    assert seen == [
        (pb.MESSAGE_KIND_PRESENCE, uid2, True),
        (pb.MESSAGE_KIND_TYPING, uid2, False),
        (pb.MESSAGE_KIND_PRESENCE, uid2, False),
    ], "its own typing is not among them"
    stream.cancel()
    channel.close()
