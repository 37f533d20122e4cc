//! `postern release keygen|sign|verify`: the publisher's tools. The secret key
//! stays on the publisher's machine; a release is the binary plus a manifest
//! and its minisign-format signature (`minisign -V -H -p key.pub -m
//! manifest.json` checks it too).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use postern_release::{MANIFEST_FORMAT, Manifest, SecretKey, TrustedKey};

/// `postern release …`
#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Make a signing key: the secret key file (mode 0600, never overwritten)
    /// and the public key in minisign's format (compile it in as
    /// `postern_release::trust::PUBLISHER_KEY`, or install it on hosts as
    /// `/etc/postern/release-key.pub`).
    Keygen {
        /// Where to write the secret key.
        #[arg(long)]
        secret_key: PathBuf,
        /// Where to write the public key (default: printed).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Describe a binary in a manifest and sign it: writes `--out` (default
    /// `postern-<version>-<target>.json`) and its `.minisig`.
    Sign {
        /// The secret key from `keygen`.
        #[arg(long)]
        secret_key: PathBuf,
        /// The binary.
        #[arg(long)]
        binary: PathBuf,
        /// Its version, e.g. 0.2.0.
        #[arg(long)]
        version: String,
        /// Its target triple (default: this build's).
        #[arg(long)]
        target: Option<String>,
        /// The oldest installed version it may replace.
        #[arg(long)]
        min_upgrade_from: String,
        /// Where the release notes are.
        #[arg(long)]
        notes_url: String,
        /// The manifest file to write.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a release: the signature with the given public key (default: the
    /// one the updater trusts), then the binary's size and SHA-256.
    Verify {
        /// The manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Its signature (default: the manifest's path + `.minisig`).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// The binary.
        #[arg(long)]
        binary: PathBuf,
        /// A public key file (minisign format).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

/// The signature file beside a manifest: `<manifest>.minisig`.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut name = manifest.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs a `postern release` subcommand.
pub fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Keygen { secret_key, public_key } => {
            let key = SecretKey::generate()?;
            key.save(&secret_key)?;
            let text = key.public_key_text()?;
            match public_key {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?,
                None => eprint!("{text}"),
            }
            eprintln!(
                "Secret key (keep it offline) in {}; key ID {}",
                secret_key.display(),
                key.key_id()
            );
            Ok(())
        }
        ReleaseCommand::Sign {
            secret_key,
            binary,
            version,
            target,
            min_upgrade_from,
            notes_url,
            out,
        } => {
            let key = SecretKey::load(&secret_key)?;
            let (sha256, size) = postern_release::artifact::digest_file(&binary)?;
            let manifest = Manifest {
                format: MANIFEST_FORMAT.into(),
                version,
                target: target.unwrap_or_else(|| postern_release::BUILD_TARGET.into()),
                sha256,
                size,
                min_upgrade_from,
                notes_url,
            };
            manifest.validate()?;
            let bytes = manifest.to_bytes()?;
            let comment = format!("postern {} {}", manifest.version, manifest.target);
            let signature = postern_release::sign(&bytes, &key, &comment)?;
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("postern-{}-{}.json", manifest.version, manifest.target)));
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            let sig_path = signature_path(&out);
            std::fs::write(&sig_path, signature).with_context(|| format!("writing {}", sig_path.display()))?;
            eprintln!(
                "Signed {} {} in {} and {}",
                manifest.version,
                manifest.target,
                out.display(),
                sig_path.display()
            );
            Ok(())
        }
        ReleaseCommand::Verify {
            manifest,
            signature,
            binary,
            public_key,
        } => {
            let key = match public_key {
                Some(p) => TrustedKey::from_text(&read(&p)?)?,
                None => postern_release::trust::publisher_key(Path::new(postern_release::trust::OVERRIDE_PATH))?.0,
            };
            let bytes = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let sig = read(&signature.unwrap_or_else(|| signature_path(&manifest)))?;
            let checked = match postern_release::verify(&bytes, &sig, &key) {
                Ok(m) => m,
                Err(e) => bail!("refused: {e}"),
            };
            postern_release::artifact::check_file(&binary, &checked).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            eprintln!(
                "OK: {} {} is signed by the trusted key and the binary matches",
                checked.version, checked.target
            );
            Ok(())
        }
    }
}
