// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title ConsentRegistry
/// @notice Non-transferable consent tokens: one per active grant a patient gave, issued
///         and revoked by the consortium member (hospital node) that holds the Consent.
/// @dev PRIVACY: no personal data on chain, and not even who was granted what. A token
///      stores only an opaque commitment computed off chain,
///          terms = SHA-256(pseudonym || grantee || purpose || consentHash || serial)
///      over the patient's salted pseudonym (HMAC with the node's secret), the hash of
///      the grantee reference (organization or research project), the HL7 v3
///      PurposeOfUse code (e.g. "TREAT", "HRESCH"), the SHA-256 of the FHIR Consent
///      version and a serial (a re-grant after a revocation), plus the validity period
///      and the status. Whoever holds the fields (a proof document) recomputes `terms`
///      and the token id and checks the token; other consortium members see nothing.
///
///      Token id = keccak256(abi.encode(chainid, this contract, issuer, terms, validFrom,
///      validUntil)): an id, or a proof built on it, cannot be replayed on another chain
///      or another deployment, and two issuers never share a token.
///
///      Storage (gas): one slot per token, packed issuer (160 bits) | validFrom (40) |
///      validUntil (40) | status (8). A grant writes one fresh slot and emits one event
///      (about 49k gas in all); a revoke rewrites the slot (about 28.6k).
///
///      ERC-5192 semantics: every token is locked from its mint and `locked()` is always
///      true; there is no transfer, no approval, no safe-mint receiver callback and no
///      ERC-721 balance bookkeeping. The mint is announced by `Granted` (which carries the
///      issuer as a topic); the optional `Locked` event is not emitted, to stay within
///      the 50k-gas grant budget.
contract ConsentRegistry is AccessControl {
    /// @notice Role allowed to grant consent tokens (one member = one hospital node key).
    bytes32 public constant MEMBER_ROLE = keccak256("MEMBER_ROLE");

    /// @notice Token status: never granted, active (possibly outside its period), revoked.
    uint8 public constant NONE = 0;
    uint8 public constant ACTIVE = 1;
    uint8 public constant REVOKED = 2;

    bytes4 private constant _ERC5192_INTERFACE = 0xb45a3c0e;

    /// @dev tokenId => issuer | validFrom << 160 | validUntil << 200 | status << 240.
    mapping(uint256 tokenId => uint256 packed) private _tokens;

    /// @notice A new token (locked from its mint, ERC-5192).
    event Granted(uint256 indexed tokenId, address indexed issuer);

    /// @notice The token no longer grants anything, from this block on.
    event Revoked(uint256 indexed tokenId, address indexed issuer);

    /// @notice The terms commitment is zero.
    error EmptyTerms();
    /// @notice `validUntil` is set and not after `validFrom`.
    error InvalidPeriod(uint40 validFrom, uint40 validUntil);
    /// @notice A revoked token cannot be granted again (grant anew with another serial).
    error TokenRevoked(uint256 tokenId);
    /// @notice No token with this id was ever granted.
    error UnknownToken(uint256 tokenId);
    /// @notice Only the member that granted a token may revoke it.
    error NotIssuer(uint256 tokenId, address caller);

    /// @param admin Account receiving DEFAULT_ADMIN_ROLE (grants MEMBER_ROLE afterwards).
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Issues the token for one grant; a repeat of an active grant is a no-op.
    /// @param terms SHA-256 commitment to the grant's fields (see the contract notes).
    /// @param validFrom Start of validity (unix seconds).
    /// @param validUntil End of validity, exclusive (unix seconds); 0 means no end.
    /// @return tokenId The token's id (see the contract notes).
    function grant(bytes32 terms, uint40 validFrom, uint40 validUntil)
        external
        onlyRole(MEMBER_ROLE)
        returns (uint256 tokenId)
    {
        if (terms == 0) revert EmptyTerms();
        if (validUntil != 0 && validUntil <= validFrom) revert InvalidPeriod(validFrom, validUntil);
        tokenId = tokenIdOf(msg.sender, terms, validFrom, validUntil);
        uint256 packed = _tokens[tokenId];
        if (packed != 0) {
            if (uint8(packed >> 240) == REVOKED) revert TokenRevoked(tokenId);
            return tokenId; // exact repeat of an active grant: idempotent
        }
        _tokens[tokenId] = uint256(uint160(msg.sender)) | (uint256(validFrom) << 160)
            | (uint256(validUntil) << 200) | (uint256(ACTIVE) << 240);
        emit Granted(tokenId, msg.sender);
    }

    /// @notice Ends a token; revoking a revoked token is a no-op.
    /// @dev No role check: the issuer recorded in the token decides, so a node that left
    ///      the consortium can still withdraw what it granted (revocation only narrows).
    function revoke(uint256 tokenId) external {
        uint256 packed = _tokens[tokenId];
        if (packed == 0) revert UnknownToken(tokenId);
        if (address(uint160(packed)) != msg.sender) revert NotIssuer(tokenId, msg.sender);
        if (uint8(packed >> 240) == REVOKED) return;
        _tokens[tokenId] = (packed & ~(uint256(0xff) << 240)) | (uint256(REVOKED) << 240);
        emit Revoked(tokenId, msg.sender);
    }

    /// @notice The id a grant of `terms` by `issuer` gets on this chain and contract.
    function tokenIdOf(address issuer, bytes32 terms, uint40 validFrom, uint40 validUntil)
        public
        view
        returns (uint256)
    {
        return uint256(keccak256(abi.encode(block.chainid, address(this), issuer, terms, validFrom, validUntil)));
    }

    /// @notice Stored state of a token (status NONE when it was never granted).
    function tokenState(uint256 tokenId)
        external
        view
        returns (address issuer, uint40 validFrom, uint40 validUntil, uint8 status)
    {
        uint256 packed = _tokens[tokenId];
        return (address(uint160(packed)), uint40(packed >> 160), uint40(packed >> 200), uint8(packed >> 240));
    }

    /// @notice True when the token is granted, not revoked, and the current block's time
    ///         lies in its validity period.
    function isActive(uint256 tokenId) external view returns (bool) {
        uint256 packed = _tokens[tokenId];
        if (uint8(packed >> 240) != ACTIVE) return false;
        uint40 validUntil = uint40(packed >> 200);
        // slither-disable-next-line timestamp
        return uint40(packed >> 160) <= block.timestamp && (validUntil == 0 || block.timestamp < validUntil);
    }

    /// @notice ERC-5192: every existing token is locked.
    function locked(uint256 tokenId) external view returns (bool) {
        if (_tokens[tokenId] == 0) revert UnknownToken(tokenId);
        return true;
    }

    /// @inheritdoc AccessControl
    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return interfaceId == _ERC5192_INTERFACE || super.supportsInterface(interfaceId);
    }
}
