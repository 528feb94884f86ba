//! `chat.v1.RoomService` over gRPC.

use chat_proto::v1::{
    CheckMembershipRequest, CreateRoomRequest, GetRoomRequest, InviteRequest, JoinRoomRequest, ListMyRoomsRequest,
};
use stack_tests::{TestApp, User, assert_status, authed};
use tonic::Code;

fn create(name: &str, is_private: bool) -> CreateRoomRequest {
    CreateRoomRequest { name: name.into(), is_private }
}

#[tokio::test]
async fn create_join_invite_and_list_rooms() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let carol = grpc.register("carol").await;
    let public = grpc.rooms.create_room(authed(&alice, create("General", false))).await.unwrap().into_inner().room_id;
    let private = grpc.rooms.create_room(authed(&alice, create("Secret", true))).await.unwrap().into_inner().room_id;

    grpc.rooms.join_room(authed(&bob, JoinRoomRequest { room_id: public })).await.unwrap();
    grpc.rooms.invite(authed(&alice, InviteRequest { room_id: private, uid: carol.uid })).await.unwrap();

    let mine = |user: &User| authed(user, ListMyRoomsRequest {});
    assert_eq!(grpc.rooms.list_my_rooms(mine(&alice)).await.unwrap().into_inner().room_ids, vec![public, private]);
    assert_eq!(grpc.rooms.list_my_rooms(mine(&bob)).await.unwrap().into_inner().room_ids, vec![public]);
    assert_eq!(grpc.rooms.list_my_rooms(mine(&carol)).await.unwrap().into_inner().room_ids, vec![private]);

    let member = |user: &User, room_id: i64| authed(user, CheckMembershipRequest { room_id });
    assert!(grpc.rooms.check_membership(member(&carol, private)).await.unwrap().into_inner().member);
    assert!(!grpc.rooms.check_membership(member(&bob, private)).await.unwrap().into_inner().member);

    let room = grpc.rooms.get_room(GetRoomRequest { room_id: public }).await.unwrap().into_inner();
    assert_eq!((room.name.as_str(), room.creator_uid, room.is_private), ("General", alice.uid, false));
    assert!(room.created_at.is_some());
    let secret = grpc.rooms.get_room(authed(&carol, GetRoomRequest { room_id: private })).await.unwrap();
    assert_eq!(secret.get_ref().name, "Secret");
}

#[tokio::test]
async fn room_calls_refuse_what_the_contract_refuses() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let alice = grpc.register("alice").await;
    let bob = grpc.register("bob").await;
    let public = grpc.rooms.create_room(authed(&alice, create("General", false))).await.unwrap().into_inner().room_id;
    let private = grpc.rooms.create_room(authed(&alice, create("Secret", true))).await.unwrap().into_inner().room_id;
    let nowhere = private + 1000;

    assert_status(grpc.rooms.create_room(create("Anonymous", false)).await, Code::Unauthenticated, "missing token");
    assert_status(grpc.rooms.create_room(authed(&bob, create("  ", false))).await, Code::InvalidArgument, "name");
    let clash = grpc.rooms.create_room(authed(&bob, create("GENERAL", false))).await;
    assert_status(clash, Code::AlreadyExists, "room name already taken");

    let join = |user: &User, room_id: i64| authed(user, JoinRoomRequest { room_id });
    assert_status(grpc.rooms.join_room(join(&bob, private)).await, Code::PermissionDenied, "private");
    assert_status(grpc.rooms.join_room(join(&bob, nowhere)).await, Code::NotFound, "room not found");
    assert_status(grpc.rooms.join_room(join(&alice, public)).await, Code::AlreadyExists, "already a member");
    assert_status(grpc.rooms.join_room(join(&bob, 0)).await, Code::InvalidArgument, "room");

    let invite = |user: &User, room_id: i64, uid: i64| authed(user, InviteRequest { room_id, uid });
    assert_status(grpc.rooms.invite(invite(&bob, public, bob.uid)).await, Code::PermissionDenied, "creator");
    assert_status(grpc.rooms.invite(invite(&alice, nowhere, bob.uid)).await, Code::NotFound, "room not found");
    assert_status(grpc.rooms.invite(invite(&alice, public, bob.uid + 1000)).await, Code::NotFound, "user not found");
    assert_status(grpc.rooms.invite(invite(&alice, public, alice.uid)).await, Code::AlreadyExists, "already a member");

    // A private room does not exist for those outside it.
    let peek = grpc.rooms.get_room(authed(&bob, GetRoomRequest { room_id: private })).await;
    assert_status(peek, Code::NotFound, "room not found");
    assert_status(grpc.rooms.get_room(GetRoomRequest { room_id: private }).await, Code::NotFound, "room not found");
    assert_status(grpc.rooms.get_room(GetRoomRequest { room_id: -3 }).await, Code::InvalidArgument, "room");
    assert_status(grpc.rooms.list_my_rooms(ListMyRoomsRequest {}).await, Code::Unauthenticated, "missing token");
    let anonymous_check = grpc.rooms.check_membership(CheckMembershipRequest { room_id: public }).await;
    assert_status(anonymous_check, Code::Unauthenticated, "missing token");
}
