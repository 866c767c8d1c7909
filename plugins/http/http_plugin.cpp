// sonde-http.so: the http and https checkers (libcurl multi interface on the engine's loop).
#include <sonde/http.hpp>
#include <sonde/plugin_export.hpp>

SONDE_PLUGIN_EXPORT("http",
                    "HTTP and HTTPS checks through libcurl: status, body, phases, TLS expiry",
                    sonde::plugin_type<sonde::http_probe>(),
                    sonde::plugin_type<sonde::https_probe>())
