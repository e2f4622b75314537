//! `sluice connectors`: the control plane's connector routes (SPEC 6) as
//! commands, human tables by default and the server's JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sluice_schema::{FieldSpec, Schema};

use super::api::Api;
use super::{Remote, infer, table};

#[derive(Subcommand)]
pub(crate) enum ConnectorsCommand {
    /// Every connector, oldest first.
    List(JsonFlag),
    /// One connector: settings, statistics and fields.
    Show {
        /// Id or exact name.
        connector: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Create a connector; prints its write and read tokens, once.
    Create(CreateArgs),
    /// Change a connector's name, description, fields or extra-field policy.
    Edit(EditArgs),
    /// Copy a connector's schema and settings under a new name (new id, new
    /// tokens, no records).
    Duplicate {
        /// Id or exact name of the connector to copy.
        connector: String,
        /// Name of the copy.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a connector and every record it holds.
    Delete {
        /// Id or exact name.
        connector: String,
        /// Confirms the deletion, which cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Replace a connector's write or read token; prints the new one, once.
    RotateToken {
        /// Id or exact name.
        connector: String,
        /// Which token.
        #[arg(value_enum)]
        scope: TokenScope,
        /// Keep the old token working this long (e.g. 10m, 1h; at most 7d).
        #[arg(long)]
        grace: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Args)]
pub(crate) struct JsonFlag {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TokenScope {
    Write,
    Read,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ExtraFields {
    Reject,
    Ignore,
}

impl ExtraFields {
    fn as_str(self) -> &'static str {
        match self {
            ExtraFields::Reject => "reject",
            ExtraFields::Ignore => "ignore",
        }
    }
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The connector's name [default: the schema file's "name", or the
    /// sample file's name].
    #[arg(long)]
    name: Option<String>,
    /// A JSON file (`-` for stdin) with the fields: `sluice infer`'s output
    /// `{"name": …, "fields": [...]}`, or the list of fields alone.
    #[arg(long, value_name = "FILE", conflicts_with = "from_sample")]
    schema: Option<PathBuf>,
    /// Infer the fields from a sample of this CSV, NDJSON or JSON file, as
    /// `sluice infer` does.
    #[arg(long, value_name = "FILE")]
    from_sample: Option<PathBuf>,
    #[arg(long)]
    description: Option<String>,
    /// What to do with record members that the schema does not name.
    #[arg(long, value_enum)]
    extra_fields: Option<ExtraFields>,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub(crate) struct EditArgs {
    /// Id or exact name.
    connector: String,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    /// The full new list of fields, as for `create --schema`; give a field
    /// `"previous_name"` to rename it keeping its values.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long, value_enum)]
    extra_fields: Option<ExtraFields>,
    #[command(flatten)]
    json: JsonFlag,
}

pub(crate) async fn run(remote: &Remote, command: ConnectorsCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(remote)?;
    match command {
        ConnectorsCommand::List(json) => list(&api, json.json).await?,
        ConnectorsCommand::Show { connector, json } => {
            let id = api.connector_id(&connector).await?;
            let found = api
                .call(api.request(Method::GET, &format!("/v1/connectors/{id}")))
                .await?;
            if json.json {
                print_json(&found);
            } else {
                print!("{}", describe(&found));
            }
        }
        ConnectorsCommand::Create(args) => create(&api, args).await?,
        ConnectorsCommand::Edit(args) => edit(&api, args).await?,
        ConnectorsCommand::Duplicate {
            connector,
            name,
            json,
        } => {
            let id = api.connector_id(&connector).await?;
            let request = api
                .request(Method::POST, &format!("/v1/connectors/{id}/duplicate"))
                .json(&json!({ "name": name }));
            print_created(&api.call(request).await?, json.json);
        }
        ConnectorsCommand::Delete { connector, yes } => {
            if !yes {
                bail!(
                    "deleting {connector:?} also deletes every record it holds, for good: \
                     add --yes to confirm"
                );
            }
            let id = api.connector_id(&connector).await?;
            api.call(api.request(Method::DELETE, &format!("/v1/connectors/{id}")))
                .await?;
            println!("Deleted connector {connector} ({id}) and its records.");
        }
        ConnectorsCommand::RotateToken {
            connector,
            scope,
            grace,
            json,
        } => {
            let id = api.connector_id(&connector).await?;
            let scope = match scope {
                TokenScope::Write => "write",
                TokenScope::Read => "read",
            };
            let mut request =
                api.request(Method::POST, &format!("/v1/connectors/{id}/tokens/{scope}"));
            if let Some(grace) = grace {
                request = request.query(&[("grace", grace)]);
            }
            let rotated = api.call(request).await?;
            if json.json {
                print_json(&rotated);
            } else {
                println!(
                    "New {scope} token of {connector} (shown only now):\n\n    {}\n",
                    rotated["token"].as_str().unwrap_or_default()
                );
                if let Some(expires) = rotated["old_token_expires_at"].as_str() {
                    println!("The old one stops working at {expires}.");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(api: &Api, as_json: bool) -> anyhow::Result<()> {
    let mut connectors = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = api
            .request(Method::GET, "/v1/connectors")
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page = api.call(request).await?;
        let batch = page["connectors"].as_array().cloned().unwrap_or_default();
        let done = batch.is_empty();
        connectors.extend(batch);
        match page["next_cursor"].as_str() {
            Some(next) if !done && page["has_more"].as_bool() != Some(false) => {
                cursor = Some(next.to_owned())
            }
            _ => break,
        }
    }
    if as_json {
        print_json(&Value::Array(connectors));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = connectors
        .iter()
        .map(|c| {
            vec![
                text(&c["id"]),
                text(&c["name"]),
                c["fields"].as_array().map_or(0, Vec::len).to_string(),
                text(&c["stats"]["records"]),
                text(&c["stats"]["rejected"]),
                text(&c["stats"]["last_received_at"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "NAME",
                "FIELDS",
                "RECORDS",
                "REJECTED",
                "LAST RECEIVED"
            ],
            &rows
        )
    );
    Ok(())
}

async fn create(api: &Api, args: CreateArgs) -> anyhow::Result<()> {
    let document = match (&args.schema, &args.from_sample) {
        (Some(path), _) => read_schema_file(path)?,
        (None, Some(sample)) => infer::proposal_for(sample, infer::DEFAULT_SAMPLE)?,
        (None, None) => bail!("give the fields with --schema FILE or --from-sample FILE"),
    };
    let Some(name) = args.name.or(document.name) else {
        bail!("give the connector a name with --name");
    };
    check_fields(&document.fields)?;
    let mut body = Map::new();
    body.insert("name".into(), json!(name));
    body.insert("fields".into(), json!(document.fields));
    if let Some(description) = args.description.or(document.description) {
        body.insert("description".into(), json!(description));
    }
    if let Some(extra) = args.extra_fields {
        body.insert("extra_fields".into(), json!(extra.as_str()));
    }
    let request = api.request(Method::POST, "/v1/connectors").json(&body);
    print_created(&api.call(request).await?, args.json.json);
    Ok(())
}

async fn edit(api: &Api, args: EditArgs) -> anyhow::Result<()> {
    let id = api.connector_id(&args.connector).await?;
    let mut body = Map::new();
    if let Some(name) = args.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(path) = &args.schema {
        body.insert("fields".into(), json!(read_schema_file(path)?.fields));
    }
    if let Some(description) = args.description {
        body.insert("description".into(), json!(description));
    }
    if let Some(extra) = args.extra_fields {
        body.insert("extra_fields".into(), json!(extra.as_str()));
    }
    if body.is_empty() {
        bail!("nothing to change: give --name, --schema, --description or --extra-fields");
    }
    let request = api
        .request(Method::PATCH, &format!("/v1/connectors/{id}"))
        .json(&body);
    let edited = api.call(request).await?;
    if args.json.json {
        print_json(&edited);
    } else {
        print!("{}", describe(&edited));
    }
    Ok(())
}

/// What a schema file holds: `sluice infer`'s output, or fields alone.
pub(crate) struct SchemaDocument {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) fields: Vec<FieldSpec>,
}

fn read_schema_file(path: &PathBuf) -> anyhow::Result<SchemaDocument> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the schema from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let shown = path.display();
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{shown} is not JSON"))?;
    let (fields, name, description) = match value {
        Value::Array(_) => (value, None, None),
        Value::Object(mut object) => (
            object.remove("fields").unwrap_or(Value::Null),
            object
                .remove("name")
                .and_then(|n| n.as_str().map(str::to_owned)),
            object
                .remove("description")
                .and_then(|d| d.as_str().map(str::to_owned)),
        ),
        _ => bail!("{shown} holds neither a list of fields nor an object with \"fields\""),
    };
    let fields = serde_json::from_value(fields).with_context(|| {
        format!("{shown}: \"fields\" must be a list of {{\"name\", \"type\", \"nullable\"}}")
    })?;
    Ok(SchemaDocument {
        name,
        description,
        fields,
    })
}

/// The server's own checks (SPEC 5), before anything is sent.
fn check_fields(fields: &[FieldSpec]) -> anyhow::Result<()> {
    if let Err(problems) = Schema::define(fields) {
        let listed: Vec<String> = problems
            .iter()
            .map(|p| format!("  - {}: {} ({})", p.field, p.message, p.code))
            .collect();
        bail!("the schema is not valid:\n{}", listed.join("\n"));
    }
    Ok(())
}

/// A created (or duplicated) connector, with its tokens: shown this once.
fn print_created(created: &Value, as_json: bool) {
    if as_json {
        print_json(created);
        return;
    }
    print!("{}", describe(created));
    println!(
        "\nWrite token: {}\nRead token:  {}\n\nThe tokens are shown only now: keep them somewhere safe.",
        text(&created["write_token"]),
        text(&created["read_token"])
    );
}

/// A connector for a person: its settings, then its fields as a table.
fn describe(connector: &Value) -> String {
    let stats = &connector["stats"];
    let mut out = format!(
        "Name:            {}\nId:              {}\nEndpoint:        {}\nSchema version:  {}\n\
         Extra fields:    {}\nRecords:         {} stored, {} rejected, last received {}\n\
         Created:         {}\nUpdated:         {}\n",
        text(&connector["name"]),
        text(&connector["id"]),
        text(&connector["endpoint"]),
        text(&connector["schema_version"]),
        text(&connector["extra_fields"]),
        text(&stats["records"]),
        text(&stats["rejected"]),
        text(&stats["last_received_at"]),
        text(&connector["created_at"]),
        text(&connector["updated_at"]),
    );
    if let Some(description) = connector["description"].as_str() {
        out.push_str(&format!("Description:     {description}\n"));
    }
    let rows: Vec<Vec<String>> = connector["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                text(&f["name"]),
                text(&f["type"]),
                if f["nullable"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                text(&f["description"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table::render(
        &["FIELD", "TYPE", "NULLABLE", "DESCRIPTION"],
        &rows,
    ));
    out
}

/// A JSON value as a table cell: strings bare, null as "-".
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}
