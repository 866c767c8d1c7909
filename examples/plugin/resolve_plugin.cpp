// Example out-of-tree plugin: probe type "resolve" checks that a host name resolves, using the
// toolkit's asynchronous resolver on the engine's event loop.
//   [[task]]
//   name = "hosts-file"
//   type = "resolve"
//   target = "localhost"
//   family = "ipv4"
//   crit = "addresses < 1"
#include <sonde/plugin_export.hpp>
#include <sonde/resolve.hpp>

namespace example {

class resolve_probe {
 public:
  static constexpr std::string_view kind = "resolve";
  static constexpr std::string_view summary = "Resolve a host name with the system's resolver";
  static constexpr std::string_view target_form = "host name";
  static constexpr sonde::port_rule target_ports = sonde::port_rule::forbidden;
  static constexpr std::uint16_t default_port = 0;

  struct options {
    std::string family = "any";  // any, ipv4, ipv6
  };
  static constexpr sonde::option_spec option_table[] = {
      {"family", sonde::option_type::string, "any", "Address family: any, ipv4 or ipv6"},
  };
  static constexpr sonde::metric_spec metric_table[] = {
      {"addresses", "count", "Number of addresses returned"},
  };

  static tl::expected<options, sonde::probe_error> options_from(const sonde::option_set& s) {
    options o;
    if (auto r = s.get("family", o.family); !r) return tl::unexpected(r.error());
    return o;
  }
  static tl::expected<resolve_probe, sonde::probe_error> make(options o) {
    resolve_probe p;
    if (o.family == "any")
      p.family_ = sonde::address_family::any;
    else if (o.family == "ipv4")
      p.family_ = sonde::address_family::ipv4;
    else if (o.family == "ipv6")
      p.family_ = sonde::address_family::ipv6;
    else
      return tl::unexpected(sonde::option_error("family", "family must be any, ipv4 or ipv6"));
    return p;
  }

  asio::awaitable<sonde::probe_result> run(sonde::target t, sonde::deadline dl) const {
    sonde::observation obs;
    obs.start = std::chrono::system_clock::now();
    auto t0 = sonde::clock::now();
    auto addrs = co_await sonde::resolve(t.host, family_, dl);
    obs.latency = sonde::clock::now() - t0;
    if (!addrs) {
      obs.fail(sonde::reason::resolve, addrs.error());
      co_return obs;
    }
    obs.set("addresses", static_cast<double>(addrs->size()));
    obs.message = t.host + " ->";
    for (const auto& a : *addrs) obs.message += " " + a.to_string();
    co_return obs;
  }

 private:
  sonde::address_family family_ = sonde::address_family::any;
};

}  // namespace example

SONDE_PLUGIN_EXPORT("resolve", "Example out-of-tree plugin: host name resolution",
                    sonde::plugin_type<example::resolve_probe>())
