// `sqlx::migrate!` embeds the migrations when core-svc is compiled, but
// cargo only notices changes to the files it embedded: a new migration
// must rebuild core-svc too.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
