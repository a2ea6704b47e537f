//! Delivering a message: over SMTP, or — in development without a server — into the log.

use lettre::message::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::{MailSettings, SmtpSecurity};

/// Where messages go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// The log (development only: the settings refuse it in production).
    Log,
    /// Nowhere (`AUTH_MAIL__DISABLED`).
    Disabled,
}

impl Mailer {
    /// The mailer the settings describe.
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        if settings.disabled {
            tracing::warn!(
                "AUTH_MAIL__DISABLED: no mail is sent (no password reset or address verification by mail)"
            );
            return Ok(Self::Disabled);
        }
        let Some(host) = &settings.smtp_host else {
            tracing::warn!(
                "AUTH_MAIL__SMTP_HOST is not set: mails (with their links) are WRITTEN TO THE LOG instead of \
                 being sent. Development only"
            );
            return Ok(Self::Log);
        };
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut parameters = TlsParameters::builder(host.clone());
            if let Some(path) = &settings.smtp_ca_path {
                let pem = std::fs::read(path).map_err(|error| {
                    anyhow::anyhow!("AUTH_MAIL__SMTP_CA_PATH {}: {error}", path.display())
                })?;
                parameters = parameters.add_root_certificate(Certificate::from_pem(&pem)?);
            }
            Ok(parameters.build_rustls()?)
        };
        let security = match settings.smtp_security {
            SmtpSecurity::Starttls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
            SmtpSecurity::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.smtp_port)
            .tls(security)
            .timeout(Some(settings.send_timeout));
        if let Some(user) = &settings.smtp_username {
            let password = settings
                .smtp_password
                .as_ref()
                .map(|password| password.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self::Smtp(builder.build()))
    }

    /// Delivers `message`; the error says why not (never the message).
    pub async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Self::Smtp(transport) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string()),
            Self::Log => {
                tracing::warn!(
                    message = %String::from_utf8_lossy(&message.formatted()),
                    "DEVELOPMENT MAIL (not sent: no SMTP server configured)"
                );
                Ok(())
            }
            Self::Disabled => Err("mail is disabled".to_owned()),
        }
    }
}
