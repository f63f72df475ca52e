//! `leadflow hooks …`: create, list, disable, enable and rotate webhook hooks.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::load_workflows;
use clap::{Args, Subcommand, ValueEnum};

use crate::db::DbSettings;
use crate::hooks;

#[derive(Debug, Args)]
pub(super) struct HooksArgs {
    #[command(flatten)]
    pub(super) db: DbSettings,
    #[command(subcommand)]
    pub(super) command: HooksCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum HooksCommand {
    /// Create a hook and print its URL and token. The token is shown only this once.
    Create {
        /// The hook's name; senders put it in the body's `hookName`.
        #[arg(long)]
        name: String,
        /// The workflow its leads run through (a file in the workflows directory).
        #[arg(long, default_value = "default")]
        workflow: String,
        /// Call leads back when the body has no `is_auto`.
        #[arg(long, value_enum, default_value_t = OnOff::On)]
        auto_callback: OnOff,
        /// Requests per minute this hook may send (default: LEADFLOW_RATE_LIMIT_PER_MIN).
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Directory of workflow definitions, to check that the workflow exists.
        #[arg(long, env = "LEADFLOW_WORKFLOWS_DIR", default_value = "workflows")]
        workflows_dir: PathBuf,
        #[command(flatten)]
        url: PublicUrl,
        /// Print JSON: {"name","url","token",…}.
        #[arg(long)]
        json: bool,
    },
    /// List hooks (never their tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a hook: its requests get 404 until it is enabled again.
    Disable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled hook.
    Enable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a hook a new token (shown once); the old one keeps working for the grace period.
    Rotate {
        name: String,
        /// How long the old token keeps working (e.g. 24h, 30m; 0 revokes it at once).
        #[arg(long, default_value = "24h")]
        grace: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub(super) struct PublicUrl {
    /// The URL senders reach this service at; defaults to http://<LEADFLOW_LISTEN>.
    #[arg(long, env = "LEADFLOW_PUBLIC_URL")]
    public_url: Option<String>,
    #[arg(
        long,
        env = "LEADFLOW_LISTEN",
        default_value = "127.0.0.1:8080",
        hide = true
    )]
    listen: String,
}

impl PublicUrl {
    fn base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

pub(super) async fn run(pool: sqlx::PgPool, cmd: HooksCommand) -> Result<()> {
    match cmd {
        HooksCommand::Create {
            name,
            workflow,
            auto_callback,
            rate_limit,
            workflows_dir,
            url,
            json,
        } => {
            let workflows = load_workflows(&workflows_dir)?;
            if workflows.get(&workflow).is_none() {
                let known: Vec<&str> = workflows.names().collect();
                anyhow::bail!(
                    "no workflow {workflow:?} in {} (known: {})",
                    workflows_dir.display(),
                    known.join(", ")
                );
            }
            let created = hooks::create(
                &pool,
                &name,
                &workflow,
                auto_callback == OnOff::On,
                &url.base(),
            )
            .await?;
            if rate_limit.is_some() {
                hooks::set_rate_limit(&pool, &name, rate_limit).await?;
            }
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "Created hook {} (workflow {}, auto-callback {})",
                    created.name,
                    created.workflow,
                    if created.auto_callback { "on" } else { "off" }
                );
                println!("URL:   {}", created.url);
                println!("Token: {}", created.token);
                println!("The token is shown only now: store it in the sender's settings.");
            }
        }
        HooksCommand::List { json } => {
            let all = hooks::list(&pool).await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|h| serde_json::json!({"name": h.name, "workflow": h.workflow, "auto_callback": h.auto_callback, "active": h.active}))
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<13} ACTIVE",
                    "NAME", "WORKFLOW", "AUTO-CALLBACK"
                );
                for h in all {
                    println!(
                        "{:<24} {:<16} {:<13} {}",
                        h.name,
                        h.workflow,
                        if h.auto_callback { "on" } else { "off" },
                        if h.active { "yes" } else { "no" }
                    );
                }
            }
        }
        HooksCommand::Disable { name, json } => set_hook_active(&pool, &name, false, json).await?,
        HooksCommand::Enable { name, json } => set_hook_active(&pool, &name, true, json).await?,
        HooksCommand::Rotate { name, grace, json } => {
            let grace = crate::workflow::duration::parse(&grace).context("--grace")?;
            let grace = crate::operator::hooks::grace(Some(grace))?;
            let rotated = hooks::rotate(&pool, &name, grace).await?;
            if json {
                println!("{}", serde_json::to_string(&rotated)?);
            } else {
                println!("New token for hook {}: {}", rotated.name, rotated.token);
                match &rotated.previous_token_expires_at {
                    Some(until) => println!("The previous token keeps working until {}.", until.0),
                    None => println!("The previous token no longer works."),
                }
                println!("The token is shown only now: store it in the sender's settings.");
            }
        }
    }
    Ok(())
}

async fn set_hook_active(pool: &sqlx::PgPool, name: &str, active: bool, json: bool) -> Result<()> {
    hooks::set_active(pool, name, active).await?;
    if json {
        println!("{}", serde_json::json!({ "name": name, "active": active }));
    } else {
        println!(
            "hook {name} {}",
            if active { "enabled" } else { "disabled" }
        );
    }
    Ok(())
}
