//! The mails, each with a plain-text and an HTML part.

use std::time::Duration;

use lettre::message::{Mailbox, Message, MultiPart};

/// What a mail says.
pub struct Letter<'a> {
    /// The subject.
    pub subject: &'a str,
    /// The opening sentence.
    pub intro: &'a str,
    /// The button's text.
    pub action: &'a str,
    /// The link.
    pub link: &'a str,
    /// How long the link works, when it carries a single-use token.
    pub valid_for: Option<Duration>,
    /// What to do if the reader did not ask for it.
    pub if_not_you: &'a str,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl Letter<'_> {
    /// The message from `from` to `to`.
    pub fn message(&self, from: &str, to: &str) -> anyhow::Result<Message> {
        let from: Mailbox = from.parse()?;
        let to: Mailbox = to.parse()?;
        let validity = self
            .valid_for
            .map(|valid| {
                format!(
                    "The link works for {} and only once.",
                    humantime::format_duration(valid)
                )
            })
            .unwrap_or_default();
        let text = format!(
            "{}\n\n{}: {}\n\n{validity}\n\n{}\n",
            self.intro, self.action, self.link, self.if_not_you
        );
        let html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><p>{}</p>\
             <p><a href=\"{link}\" style=\"padding:8px 16px;background:#1f6feb;color:#fff;text-decoration:none\">{}</a></p>\
             <p>Or paste this address into your browser: {link}</p>\
             <p>{}</p><p>{}</p></body></html>",
            escape(self.intro),
            escape(self.action),
            escape(&validity),
            escape(self.if_not_you),
            link = escape(self.link),
        );
        Ok(Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject)
            .multipart(MultiPart::alternative_plain_html(text, html))?)
    }
}
