// Must not compile: a C++ type that mcbus does not map. The diagnostic has to name the trait to
// specialize (compile_fail.cmake checks the compiler's output). Built with MCBUS_CONTROL, the same
// file maps the type and compiles, which shows that the failure comes from the missing mapping.
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/writer.hpp>

namespace {
struct not_mapped {
  int x;
};
}  // namespace

#ifdef MCBUS_CONTROL
MCBUS_STRUCT(not_mapped, x);
#endif

int main() {
  mcbus::detail::byte_buffer buf;
  mcbus::writer w(buf);
  w.write(not_mapped{1});
  return static_cast<int>(mcbus::signature_of<not_mapped>.size());
}
