//! `leadflow block …`: the block list of phones and emails that are never called.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use crate::blocklist;
use crate::db::DbSettings;
use crate::validate::BlockKind;

#[derive(Debug, Args)]
pub(super) struct BlockArgs {
    #[command(flatten)]
    pub(super) db: DbSettings,
    #[command(subcommand)]
    pub(super) command: BlockCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum BlockCommand {
    /// Block a phone number (E.164, e.g. +14155550123) or an email address.
    Add {
        #[arg(value_enum)]
        kind: Kind,
        value: String,
        /// Why it is blocked, for the next operator.
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove an entry from the block list.
    Remove {
        #[arg(value_enum)]
        kind: Kind,
        value: String,
    },
    /// List the block list (values masked unless --reveal).
    List {
        #[arg(long)]
        json: bool,
        /// Show full phone numbers and email addresses.
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Kind {
    Phone,
    Email,
}

impl From<Kind> for BlockKind {
    fn from(k: Kind) -> BlockKind {
        match k {
            Kind::Phone => BlockKind::Phone,
            Kind::Email => BlockKind::Email,
        }
    }
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Phone => "phone",
            Kind::Email => "email",
        }
    }
}

pub(super) async fn run(pool: sqlx::PgPool, cmd: BlockCommand) -> Result<()> {
    match cmd {
        BlockCommand::Add { kind, value, note } => {
            let stored = blocklist::add(&pool, kind.into(), &value, note.as_deref()).await?;
            println!("blocked {} {}", kind.as_str(), stored);
        }
        BlockCommand::Remove { kind, value } => {
            let removed = blocklist::remove(&pool, kind.into(), &value).await?;
            println!(
                "{} {} {}",
                if removed {
                    "unblocked"
                } else {
                    "was not blocked:"
                },
                kind.as_str(),
                value
            );
        }
        BlockCommand::List { json, reveal } => {
            let mut entries = blocklist::list(&pool).await?;
            if !reveal {
                entries = entries.into_iter().map(blocklist::Entry::masked).collect();
            }
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                println!("{:<6} {:<32} NOTE", "KIND", "VALUE");
                for e in entries {
                    println!(
                        "{:<6} {:<32} {}",
                        e.kind,
                        e.value,
                        e.note.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}
