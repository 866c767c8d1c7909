// TEMPORARY until the notifiers land (branch notifiers): lets the rest of alarms/ compile.
#include "alarms/notifier.hpp"
namespace sonde::engine::alarms {
const std::vector<std::string>& notifier_types() {
  static const std::vector<std::string> t = {"webhook", "exec"};
  return t;
}
const std::vector<notifier_option>& notifier_options(std::string_view type) {
  static const std::vector<notifier_option> none;
  static const std::vector<notifier_option> wh = {{"url", option_kind::string, true, "URL"}};
  static const std::vector<notifier_option> ex = {
      {"command", option_kind::string_list, true, "argv"}};
  return type == "webhook" ? wh : type == "exec" ? ex : none;
}
tl::expected<void, notifier_error> validate_notifier(const notifier_spec&) {
  return {};
}
tl::expected<std::unique_ptr<notifier>, notifier_error> make_notifier(asio::io_context&,
                                                                      notifier_spec) {
  return tl::unexpected(notifier_error{"", "not yet"});
}
}  // namespace sonde::engine::alarms
