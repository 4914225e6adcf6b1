//! `hubbub user …`: account management against a stopped server's data directory.

use anyhow::{Context, bail};

use crate::config::{UserAction, UserArgs};
use crate::protocol::Username;
use crate::storage::Store;

pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.data_dir.join("db"), 16 << 20).with_context(|| {
        format!(
            "opening {} (if hubbub is running, use POST /api/admin/users/NAME/disable with --admin-token)",
            args.data_dir.display()
        )
    })?;
    match args.action {
        UserAction::List => {
            for u in store.users()? {
                println!(
                    "{}\t{}\t{}",
                    u.username,
                    u.id,
                    if u.disabled { "disabled" } else { "enabled" }
                );
            }
        }
        UserAction::Disable { name } => set(&store, &name, true).await?,
        UserAction::Enable { name } => set(&store, &name, false).await?,
    }
    Ok(())
}

async fn set(store: &Store, name: &str, disabled: bool) -> anyhow::Result<()> {
    let Some(user) = Username::parse(name) else {
        bail!("invalid username {name:?}")
    };
    if !store.set_disabled(&user, disabled)? {
        bail!("no user {name:?}");
    }
    store.flush().await?;
    println!("{user} {}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}
