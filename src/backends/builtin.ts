/**
 * The backends that ship with localvm. Importing this module registers them; the registry
 * itself knows no names.
 */
import './qemu/register.js';
import './orbstack/register.js';
import './libvirt/register.js';
