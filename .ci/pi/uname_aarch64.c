/* A 32-bit Raspberry Pi OS userland on a 64-bit kernel (the default on Pi 4 and Pi 5), for
 * make test-pi32-k64: qemu-arm answers uname(2) with the emulated CPU ("armv7l") and has no option
 * to change the machine name (QEMU_UNAME sets only the release), so this library, preloaded into
 * every process of the armhf root through /etc/ld.so.preload, reports what the Pi's arm64 kernel
 * reports to a 32-bit process: machine "aarch64". Everything else comes from the real uname(2).
 * Only the name changes: the compiler still targets armv7 and AT_HWCAP still describes the
 * emulated Cortex-A7, as on the Pi, where only the kernel is 64-bit.
 *
 *   arm-linux-gnueabihf-gcc -shared -fPIC -O2 -o uname_aarch64.so uname_aarch64.c
 */
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

int uname(struct utsname *buf) {
    int rc = (int)syscall(SYS_uname, buf);
    if (rc == 0) {
        strncpy(buf->machine, "aarch64", sizeof buf->machine - 1);
        buf->machine[sizeof buf->machine - 1] = '\0';
    }
    return rc;
}
