//! `moltmate users requests | approve CODE | deny CODE`: access requests from a terminal. The
//! decision is the same as an admin's button (`crate::access`); the gateway, which watches the
//! store, tells the person and edits the admins' messages.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::access::request::show_time;
use crate::access::{self, Mode, RequestStore, State};
use crate::crd::{MoltmateUser, Profile};

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    /// The request's code, as the person and the admins were given it.
    pub code: String,
    /// The profile to give (default: the first one the gateway offers).
    #[arg(long, value_parser = parse_profile)]
    pub profile: Option<Profile>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(clap::Args, Debug)]
pub struct DenyArgs {
    /// The request's code.
    pub code: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(clap::Args, Debug)]
pub struct RequestsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The gateway's namespace, where the requests are kept.
    #[arg(long, env = "MOLTMATE_GATEWAY_NAMESPACE", default_value = "moltmate-system")]
    pub namespace: String,
}

fn parse_profile(text: &str) -> Result<Profile, String> {
    Profile::ALL
        .into_iter()
        .find(|p| p.as_str() == text.trim())
        .ok_or_else(|| format!("{text:?} is not a profile; one of {}", Profile::ALL.map(|p| p.as_str()).join(", ")))
}

/// Who decided, as the record and the admins' messages show it.
fn decider() -> String {
    let who = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "admin".into());
    format!("cli:{who}")
}

async fn existing(client: &Client) -> Result<access::Existing, kube::Error> {
    let users = Api::<MoltmateUser>::all(client.clone()).list(&ListParams::default()).await?.items;
    Ok(users.iter().map(|u| (u.name_any(), u.spec.telegram.user_id)).collect())
}

pub async fn approve(client: &Client, args: &ApproveArgs) -> Result<(), access::Error> {
    let store = RequestStore::new(client.clone(), &args.store.namespace);
    let existing = existing(client).await?;
    let approval =
        access::approve(client, &store, &args.code, args.profile, &decider(), &existing, &args.store.namespace).await?;
    let who = approval.request.who();
    match (&approval.manifest, approval.created) {
        (Some(manifest), _) => {
            eprintln!(
                "{}: approved {who} as {} in GitOps mode. Commit this manifest; they can chat once it is deployed:",
                approval.code,
                approval.profile.as_str()
            );
            print!("{manifest}");
        }
        (None, true) => println!(
            "{}: approved {who}: MoltmateUser {} created with profile {}. The gateway tells them.",
            approval.code,
            approval.user,
            approval.profile.as_str()
        ),
        (None, false) => println!(
            "{}: approved {who}, who has MoltmateUser {} already. The gateway tells them.",
            approval.code, approval.user
        ),
    }
    Ok(())
}

pub async fn deny(client: &Client, args: &DenyArgs) -> Result<(), access::Error> {
    let store = RequestStore::new(client.clone(), &args.store.namespace);
    let (code, request) = access::deny(&store, &args.code, &decider()).await?;
    println!("{code}: denied {}. The gateway tells them.", request.who());
    Ok(())
}

pub async fn list(client: &Client, args: &RequestsArgs) -> Result<(), access::Error> {
    let store = RequestStore::new(client.clone(), &args.store.namespace);
    let now = jiff::Timestamp::now().as_second();
    let requests = store.read().await?;
    println!("{:<10} {:<9} {:<22} {:<20} FROM", "CODE", "STATE", "EXPIRES", "PROFILES");
    for (code, r) in &requests.0 {
        let state = match r.state(now) {
            State::Open => "open",
            State::Expired => "expired",
            State::Approved => "approved",
            State::Denied => "denied",
        };
        let profiles = r.profiles.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",");
        let profiles = if r.mode == Mode::Gitops { format!("{profiles} (gitops)") } else { profiles };
        println!("{code:<10} {state:<9} {:<22} {profiles:<20} {}", show_time(r.expires_at), r.who());
    }
    Ok(())
}
