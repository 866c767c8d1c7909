// sonde-dns.so: the dns checker as a plugin.
#include <sonde/dns.hpp>
#include <sonde/plugin_export.hpp>

SONDE_PLUGIN_EXPORT("dns", "DNS query checks: response code, answers, UDP with TCP fallback",
                    sonde::plugin_type<sonde::dns_probe>())
