/* Check-only stand-in for the one macOS SDK header ring's C code includes. Used by .ci/run to
 * type-check pgharness for macOS on Linux (cargo clippy, nothing is linked or run); the real
 * header comes with Xcode on a Mac. */
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_SIMULATOR 0
