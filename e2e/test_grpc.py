"""The public gRPC API from an independent client: Python grpcio, with
stubs generated from the .proto files at test time (conftest's `chat`),
and reflection."""

import uuid

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_register_login_subscribe_send_and_receive(stack, chat):
    pb, rpc = chat
    channel = grpc.insecure_channel(stack.grpc)
    users = rpc.UserServiceStub(channel)
    rooms = rpc.RoomServiceStub(channel)
    messages = rpc.MessageServiceStub(channel)
    name = f"py_{uuid.uuid4().hex[:8]}"
    email = f"{name}@example.com"

    uid = users.Register(pb.RegisterRequest(username=name, email=email, password="password")).uid
    login = users.Login(pb.LoginRequest(email=email, password="password"))
    assert login.uid == uid and login.token
    auth = [("authorization", f"Bearer {login.token}")]
    assert users.GetProfile(pb.GetProfileRequest(), metadata=auth).email == email

    room_id = rooms.CreateRoom(pb.CreateRoomRequest(name=f"room {name}"), metadata=auth).room_id
    stream = messages.Subscribe(pb.SubscribeRequest(room_id=room_id), metadata=auth, timeout=20)
    # The server answers with its headers once the subscription is in place.
    stream.initial_metadata()
    sent = messages.Send(pb.SendRequest(room_id=room_id, text="hello from Python"), metadata=auth)
    received = next(stream)
    assert (received.id, received.uid, received.text) == (sent.message_id, uid, "hello from Python")
    assert received.kind == pb.MESSAGE_KIND_MESSAGE
    stream.cancel()

    with pytest.raises(grpc.RpcError) as refused:
        messages.Send(pb.SendRequest(room_id=room_id, text="no token"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def test_reflection_lists_the_services(stack):
    channel = grpc.insecure_channel(stack.grpc)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in answer.list_services_response.service}
    assert {
        "chat.v1.UserService",
        "chat.v1.RoomService",
        "chat.v1.MessageService",
        "grpc.health.v1.Health",
    } <= names
    channel.close()


def test_health_reports_each_dependency(stack):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(stack.grpc)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "postgres", "redis", "kafka", "nats"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    channel.close()
