//! A running node's settings: the command line's flags over a TOML config file, checked as a
//! whole before anything starts.
//!
//! The file uses the flags' names (`data_dir`, `genesis`, `listen`, `bootstrap`, `http`,
//! `recipe`, `submit_dir`, `mdns`, `behind_nat`, `scorer`, `role`); a flag given on the command line wins over the file.
//! [`NodeConfig::resolve`] checks every relationship between the settings and names what is wrong
//! and how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::context::Role;

/// Largest config file read, in bytes.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The addresses a node listens on when none is given: TCP and QUIC on every interface, ports
/// the OS picks.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"];

/// One value or a list of them (`listen = "/ip4/…"` or `listen = ["/ip4/…", …]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The TOML config file: every field optional, named like the flags (unset fields are left out
/// when one is written, as the testnet does).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The role (`validator` or `trainer`).
    pub role: Option<String>,
    /// The data directory.
    pub data_dir: Option<PathBuf>,
    /// The genesis file.
    pub genesis: Option<PathBuf>,
    /// Listen multiaddrs.
    pub listen: Option<OneOrMany>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Option<OneOrMany>,
    /// HTTP API address.
    pub http: Option<String>,
    /// A trainer's recipe file.
    pub recipe: Option<PathBuf>,
    /// A trainer's submit folder (models trained elsewhere), instead of a recipe.
    pub submit_dir: Option<PathBuf>,
    /// Whether mDNS discovery runs.
    pub mdns: Option<bool>,
    /// Whether the node cannot be dialed and listens through relays from the start.
    pub behind_nat: Option<bool>,
    /// Whether a validator runs its scoring loop (attests to holding tasks' sealed held-out files
    /// and scores them); default true.
    pub scorer: Option<bool>,
    /// Host names, besides the loopback names and the HTTP address itself, under which the HTTP
    /// API accepts writes (a name the node is reached by; any other is refused as DNS rebinding).
    pub http_write_hosts: Option<Vec<String>>,
}

impl ConfigFile {
    /// Reads and parses a config file; relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let read = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
        let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
        if meta.len() > CONFIG_BYTES_MAX {
            return Err(read(format!(
                "{} bytes, over the limit of {CONFIG_BYTES_MAX}",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let mut file: ConfigFile = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let paths = [&mut file.data_dir, &mut file.genesis, &mut file.recipe, &mut file.submit_dir];
        for p in paths.into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// The flags of `node --role …`, as given (`None` or empty when not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--role`.
    pub role: Option<Role>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--genesis`.
    pub genesis: Option<PathBuf>,
    /// `--listen` (repeatable).
    pub listen: Vec<String>,
    /// `--bootstrap` (repeatable).
    pub bootstrap: Vec<String>,
    /// `--http`.
    pub http: Option<String>,
    /// `--recipe`.
    pub recipe: Option<PathBuf>,
    /// `--submit-dir`.
    pub submit_dir: Option<PathBuf>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--behind-nat`.
    pub behind_nat: bool,
    /// `--no-scorer`.
    pub no_scorer: bool,
}

/// A running node's settings, resolved and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The role.
    pub role: Role,
    /// The data directory (holds the key, the genesis copy, the chain, the WAL and blobs).
    pub data_dir: PathBuf,
    /// A genesis file to use (copied into the data dir on first start); `None` uses the data
    /// dir's copy.
    pub genesis: Option<PathBuf>,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Where the HTTP API listens, if anywhere.
    pub http: Option<SocketAddr>,
    /// A trainer's recipe; `None` runs the default recipe (unless `submit_dir` is set).
    pub recipe: Option<PathBuf>,
    /// A trainer's submit folder: it takes models trained elsewhere from there instead of
    /// training with a recipe (never both).
    pub submit_dir: Option<PathBuf>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Whether the node cannot be dialed (see [`crate::network::NetworkConfig::behind_nat`]).
    pub behind_nat: bool,
    /// Whether a validator runs its scoring loop.
    pub scorer: bool,
    /// Extra host names the HTTP API accepts writes under (see [`ConfigFile::http_write_hosts`]).
    pub http_write_hosts: Vec<String>,
}

/// A setting that is missing, malformed or inconsistent with another.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A required setting is missing.
    #[error("{name} is not set: {fix}")]
    Missing {
        /// The setting.
        name: &'static str,
        /// How to set it.
        fix: &'static str,
    },
    /// A setting has a malformed value.
    #[error("{name} {value:?} is invalid: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Two settings do not go together.
    #[error("{0}")]
    Conflict(String),
}

fn invalid(name: &'static str, value: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid { name, value: value.into(), reason: reason.to_string() }
}

fn parse_addrs(name: &'static str, values: Vec<String>) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .into_iter()
        .map(|v| v.parse::<Multiaddr>().map_err(|e| invalid(name, v.clone(), e)))
        .collect()
}

impl NodeConfig {
    /// Whether the node relays for peers behind NATs (circuit relay v2): a validator does,
    /// unless it is behind a NAT itself (`behind_nat`), where its circuits could not be dialed.
    pub fn relay_server(&self) -> bool {
        self.role == Role::Validator && !self.behind_nat
    }

    /// Merges `flags` over `file` and checks the result: a role and a data dir are set, the data
    /// dir holds a key, addresses parse, a recipe only for a trainer, and the files named exist.
    pub fn resolve(flags: Flags, file: ConfigFile) -> Result<NodeConfig, ConfigError> {
        let role = match (flags.role, file.role) {
            (Some(role), _) => role,
            (None, Some(name)) => match name.as_str() {
                "validator" => Role::Validator,
                "trainer" => Role::Trainer,
                _ => return Err(invalid("role", name, "expected `validator` or `trainer`")),
            },
            (None, None) => {
                return Err(ConfigError::Missing {
                    name: "role",
                    fix: "pass --role validator|trainer or set `role` in the config file",
                });
            }
        };
        let data_dir = flags.data_dir.or(file.data_dir).ok_or(ConfigError::Missing {
            name: "data dir",
            fix: "pass --data-dir DIR or set `data_dir` in the config file",
        })?;
        if !data_dir.is_dir() {
            return Err(invalid(
                "data dir",
                data_dir.display().to_string(),
                "not a directory; create it with `node init --data-dir DIR --genesis FILE`",
            ));
        }
        let key = data_dir.join(crate::keystore::KEY_FILE);
        if !key.is_file() {
            return Err(invalid(
                "data dir",
                data_dir.display().to_string(),
                format!(
                    "it holds no {}; create one with `node init --data-dir {}`",
                    crate::keystore::KEY_FILE,
                    data_dir.display()
                ),
            ));
        }
        let genesis = flags.genesis.or(file.genesis);
        match &genesis {
            Some(path) if !path.is_file() => {
                return Err(invalid("genesis", path.display().to_string(), "no such file"));
            }
            None if !crate::datadir::DataDir::new(&data_dir).genesis().is_file() => {
                return Err(ConfigError::Missing {
                    name: "genesis",
                    fix: "pass --genesis FILE, set `genesis` in the config file, or run `node init --genesis FILE`",
                });
            }
            _ => {}
        }
        let listen = if flags.listen.is_empty() {
            file.listen
                .map(OneOrMany::into_vec)
                .unwrap_or_else(|| DEFAULT_LISTEN.map(String::from).to_vec())
        } else {
            flags.listen
        };
        let listen = parse_addrs("listen address", listen)?;
        if listen.is_empty() {
            return Err(ConfigError::Missing {
                name: "listen address",
                fix: "pass --listen MULTIADDR (e.g. /ip4/0.0.0.0/tcp/4001)",
            });
        }
        let bootstrap = if flags.bootstrap.is_empty() {
            file.bootstrap.map(OneOrMany::into_vec).unwrap_or_default()
        } else {
            flags.bootstrap
        };
        let bootstrap = parse_addrs("bootstrap address", bootstrap)?;
        let http = flags
            .http
            .or(file.http)
            .map(|v| v.parse::<SocketAddr>().map_err(|e| invalid("http address", v.clone(), e)))
            .transpose()?;
        if flags.recipe.is_some() && flags.submit_dir.is_some() {
            return Err(ConfigError::Conflict(
                "a trainer either trains with --recipe or takes models from --submit-dir, not both"
                    .into(),
            ));
        }
        // A flag for one source overrides the file's setting of the other.
        let (recipe_flag, submit_flag) = (flags.recipe.is_some(), flags.submit_dir.is_some());
        let recipe = flags.recipe.or(file.recipe.filter(|_| !submit_flag));
        let submit_dir = flags.submit_dir.or(file.submit_dir.filter(|_| !recipe_flag));
        if recipe.is_some() && submit_dir.is_some() {
            return Err(ConfigError::Conflict(
                "the config file sets both `recipe` and `submit_dir`; a trainer has one source of \
                 models"
                    .into(),
            ));
        }
        match role {
            Role::Validator if recipe.is_some() => {
                return Err(ConfigError::Conflict(
                    "a recipe is for a trainer; drop --recipe or run with --role trainer".into(),
                ));
            }
            Role::Validator if submit_dir.is_some() => {
                return Err(ConfigError::Conflict(
                    "a submit folder is for a trainer; drop --submit-dir or run with --role \
                     trainer"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(path) = &recipe
            && !path.is_file()
        {
            return Err(invalid("recipe", path.display().to_string(), "no such file"));
        }
        let mdns = !flags.no_mdns && file.mdns.unwrap_or(true);
        let behind_nat = flags.behind_nat || file.behind_nat.unwrap_or(false);
        let scorer = !flags.no_scorer && file.scorer.unwrap_or(true);
        let http_write_hosts = file.http_write_hosts.unwrap_or_default();
        if let Some(bad) = http_write_hosts.iter().find(|h| h.is_empty() || h.contains([':', '/']))
        {
            return Err(invalid(
                "http_write_hosts entry",
                bad.clone(),
                "must be a host name or IPv4 address without port or scheme",
            ));
        }
        Ok(NodeConfig {
            role,
            data_dir,
            genesis,
            listen,
            bootstrap,
            http,
            recipe,
            submit_dir,
            mdns,
            behind_nat,
            scorer,
            http_write_hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::keystore::KEY_FILE), "{}").unwrap();
        std::fs::write(dir.path().join("genesis.json"), "{}").unwrap();
        dir
    }

    #[test]
    fn flags_win_over_the_file_and_relationships_are_checked() {
        let dir = data_dir();
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "role = \"trainer\"\ndata_dir = {:?}\nlisten = \"/ip4/127.0.0.1/tcp/1\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/2\"]\nhttp = \"127.0.0.1:1\"\nmdns = false\n",
                dir.path()
            ),
        )
        .unwrap();
        let file = ConfigFile::load(&config).unwrap();
        let flags = Flags { listen: vec!["/ip4/127.0.0.1/tcp/3".into()], ..Flags::default() };
        let resolved = NodeConfig::resolve(flags, file.clone()).unwrap();
        assert_eq!(resolved.role, Role::Trainer);
        assert_eq!(resolved.listen, vec!["/ip4/127.0.0.1/tcp/3".parse::<Multiaddr>().unwrap()]);
        assert_eq!(resolved.bootstrap.len(), 1);
        assert!(!resolved.mdns);
        assert!(resolved.scorer, "a validator scores unless told not to");
        let quiet = Flags { no_scorer: true, ..Flags::default() };
        assert!(!NodeConfig::resolve(quiet, file.clone()).unwrap().scorer);
        let quiet_file = ConfigFile { scorer: Some(false), ..file.clone() };
        assert!(!NodeConfig::resolve(Flags::default(), quiet_file).unwrap().scorer);
        assert_eq!(resolved.http, Some("127.0.0.1:1".parse().unwrap()));

        let recipe =
            Flags { role: Some(Role::Validator), recipe: Some(config.clone()), ..Flags::default() };
        assert!(matches!(NodeConfig::resolve(recipe, file.clone()), Err(ConfigError::Conflict(_))));
        let bad = Flags { bootstrap: vec!["nonsense".into()], ..Flags::default() };
        assert!(matches!(
            NodeConfig::resolve(bad, file.clone()),
            Err(ConfigError::Invalid { name: "bootstrap address", .. })
        ));
        let both = Flags {
            recipe: Some(config.clone()),
            submit_dir: Some(dir.path().join("submit")),
            ..Flags::default()
        };
        assert!(matches!(NodeConfig::resolve(both, file.clone()), Err(ConfigError::Conflict(_))));
        let recipe_file = ConfigFile { recipe: Some(config.clone()), ..file.clone() };
        let outside = Flags { submit_dir: Some(dir.path().join("submit")), ..Flags::default() };
        let resolved = NodeConfig::resolve(outside, recipe_file.clone()).unwrap();
        assert_eq!(
            (resolved.recipe, resolved.submit_dir),
            (None, Some(dir.path().join("submit"))),
            "--submit-dir overrides the file's recipe"
        );
        let both_in_file = ConfigFile { submit_dir: Some(dir.path().into()), ..recipe_file };
        assert!(matches!(
            NodeConfig::resolve(Flags::default(), both_in_file),
            Err(ConfigError::Conflict(_))
        ));
        let no_role = ConfigFile { role: None, ..file };
        assert!(matches!(
            NodeConfig::resolve(Flags::default(), no_role),
            Err(ConfigError::Missing { name: "role", .. })
        ));
        std::fs::write(&config, "colour = 1\n").unwrap();
        assert!(matches!(ConfigFile::load(&config), Err(ConfigError::File { .. })));
    }

    #[test]
    fn only_a_validator_that_can_be_dialed_serves_the_relay() {
        let dir = data_dir();
        let file = ConfigFile { data_dir: Some(dir.path().into()), ..ConfigFile::default() };
        let config = |role, behind_nat| {
            let flags = Flags { role: Some(role), behind_nat, ..Flags::default() };
            NodeConfig::resolve(flags, file.clone()).unwrap()
        };
        assert!(config(Role::Validator, false).relay_server());
        assert!(!config(Role::Validator, true).relay_server(), "its circuits could not be dialed");
        assert!(!config(Role::Trainer, false).relay_server());
        let nat_file = ConfigFile { behind_nat: Some(true), ..file.clone() };
        let from_file = Flags { role: Some(Role::Validator), ..Flags::default() };
        assert!(!NodeConfig::resolve(from_file, nat_file).unwrap().relay_server());
    }
}
