// The Kotlin side of peer/ffi/tests/bench.rs: the same calls the Rust side makes, through the
// generated bindings, on a device of its own in WEFT_WORK_DIR (offline: no relay), then where
// a call's time goes (JNA's pieces alone, and the async calls again with the wake-up thread
// kept attached to the JVM). Prints one line per figure, `BENCH name median_us mean_us calls`,
// which the Rust side reads.

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import java.io.File
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import uniffi.weft_ffi.*

fun count(name: String): Int = System.getenv(name)?.toInt() ?: error("$name is not set")

/** Times `calls` calls of `call` one by one (after `warmup` untimed ones). */
suspend fun each(name: String, warmup: Int, calls: Int, call: suspend () -> Unit) {
    repeat(warmup) { call() }
    val times = LongArray(calls)
    for (i in 0 until calls) {
        val t0 = System.nanoTime()
        call()
        times[i] = System.nanoTime() - t0
    }
    times.sort()
    report(name, times[calls / 2] / 1000.0, times.sum() / 1000.0 / calls, calls)
}

/** Times `calls` calls of `call` as one batch (for calls close to the clock's own cost). */
suspend fun batch(name: String, warmup: Int, calls: Int, call: suspend () -> Unit) {
    repeat(warmup) { call() }
    val t0 = System.nanoTime()
    repeat(calls) { call() }
    val mean = (System.nanoTime() - t0) / 1000.0 / calls
    report(name, mean, mean, calls)
}

fun report(name: String, median: Double, mean: Double, calls: Int) =
    println("BENCH $name $median $mean $calls")

fun main() {
    try {
        runBlocking { run() }
        exitProcess(0)
    } catch (e: Throwable) {
        e.printStackTrace()
        exitProcess(1)
    }
}

suspend fun run() {
    val sends = count("WEFT_BENCH_SENDS")
    val cheap = count("WEFT_BENCH_CHEAP_CALLS")
    val device = openDevice(File(System.getenv("WEFT_WORK_DIR"), "kotlin").path, "alice")
    val chat = device.createConversation("Bench", listOf("alice"))
    each("send_message", sends / 10, sends) { device.sendMessage(chat, "noon at the usual place?") }
    batch("document_info", cheap / 10, cheap / 10) { device.documentInfo(chat) }
    batch("status", cheap / 10, cheap) { device.status() }
    batch("user", cheap / 10, cheap) { device.user() }

    // Where the time goes. A JNA call that passes only numbers (the contract version) ...
    batch("jna_bare_call", cheap / 10, cheap) { IntegrityCheckingUniffiLib.ffi_weft_ffi_uniffi_contract_version() }
    // ... the call-status structure every uniffi call allocates (a second crossing per method
    // call clones the object's handle, a third frees a returned buffer) ...
    batch("jna_call_status", cheap / 10, cheap) { UniffiRustCallStatus() }
    // ... and a method's handle cloned and freed: two calls with their statuses.
    batch("handle_clone_free", cheap / 10, cheap) {
        UniffiLib.uniffi_weft_ffi_fn_free_weftdevice(device.uniffiCloneHandle(), UniffiRustCallStatus())
    }
    // The async call again, late in the run, to tell drift over the run from what follows.
    batch("document_info_again", cheap / 10, cheap / 10) { device.documentInfo(chat) }
    // An async call is woken from a tokio thread through a JNA callback: JNA attaches that
    // thread to the JVM for the callback and detaches it after, unless told to keep it.
    Native.setCallbackThreadInitializer(
        uniffiRustFutureContinuationCallbackImpl,
        CallbackThreadInitializer(true, false, "weft-wake"),
    )
    each("send_message_attached", sends / 10, sends) { device.sendMessage(chat, "noon at the usual place?") }
    batch("document_info_attached", cheap / 10, cheap / 10) { device.documentInfo(chat) }
    device.shutdown()
}
