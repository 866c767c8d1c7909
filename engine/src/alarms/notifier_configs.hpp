#pragma once
/// @file notifier_configs.hpp
/// Inside the notifiers: each type's options once validated (what validate_notifier checks and
/// make_notifier builds from), and the factories of the types. Not for other subsystems: they
/// use notifier.hpp.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio/io_context.hpp>

#include "alarms/email.hpp"
#include "alarms/notifier.hpp"
#include "alarms/template.hpp"

namespace sonde::engine::alarms {

/// A `Name: value` header line list plus the values that must never reach a log.
struct header_list {
  std::vector<std::string> lines;
  std::vector<std::string> secrets;
};

struct webhook_config {
  std::string url;  ///< normalized http(s) URL
  std::string method = "POST";
  header_list headers;
  std::optional<message_template> body;  ///< nullopt: the default JSON body
  std::string content_type = "application/json";
  bool tls_verify = true;
  std::string ca_file;
};

struct slack_config {
  std::string url;
  message_template text;
  std::string username, channel, icon_emoji;
  bool tls_verify = true;
  std::string ca_file;
};

struct email_config {
  std::string url;  ///< smtp://host:port or smtps://host:port
  bool require_tls = true;
  bool tls_verify = true;
  std::string ca_file;
  mailbox from;
  std::vector<mailbox> to;
  std::string username, password;
  message_template subject, body;
};

struct ntfy_config {
  std::string url;
  std::string token, username, password;
  message_template title, message;
  int priority = 0;  ///< 1-5, 0: from the events' severity
  std::vector<std::string> tags;
  bool tls_verify = true;
  std::string ca_file;
};

struct telegram_config {
  std::string api_url;  ///< normalized, no trailing slash
  std::string bot_token;
  std::string chat_id;
  message_template text;
  std::string parse_mode;  ///< "" (plain text), HTML, MarkdownV2 or Markdown
};

struct pagerduty_config {
  std::string url;
  std::string routing_key;
  std::string source;
};

struct exec_config {
  std::vector<std::string> command;  ///< argv; command[0] is looked up on PATH without '/'
  std::vector<std::pair<std::string, std::string>> env;
};

/// The factories, one per type (notifier_options.cpp has validated the config).
std::unique_ptr<notifier> make_webhook(asio::io_context& io, notifier_spec spec, webhook_config c);
std::unique_ptr<notifier> make_slack(asio::io_context& io, notifier_spec spec, slack_config c);
std::unique_ptr<notifier> make_email(asio::io_context& io, notifier_spec spec, email_config c);
std::unique_ptr<notifier> make_ntfy(asio::io_context& io, notifier_spec spec, ntfy_config c);
std::unique_ptr<notifier> make_telegram(asio::io_context& io, notifier_spec spec,
                                        telegram_config c);
std::unique_ptr<notifier> make_pagerduty(asio::io_context& io, notifier_spec spec,
                                         pagerduty_config c);
std::unique_ptr<notifier> make_exec(asio::io_context& io, notifier_spec spec, exec_config c);

/// The template context of `n` for notifier `name`.
template_context context_of(const notification& n, const std::string& name);

}  // namespace sonde::engine::alarms
